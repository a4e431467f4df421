//! A small element builder for the page's HTML.
//!
//! `view!` gives every element its own type (tag × attributes × children), and
//! every type brings its own copy of the rendering code: that was most of the
//! page's wasm. Elements built here all have one type (an element by tag name,
//! with type-erased attributes and children), reactive values are shared closures
//! (one type per value type), and the generic methods are thin shims over
//! non-generic ones. The DOM is the same as `view!`'s.
//!
//! Tag names are given in upper case (`el("DIV")`): the DOM reports them so, and
//! tachys compares them to decide whether a rebuilt element can be updated in
//! place (as `view!`'s typed elements are) or must be replaced.

use leptos::prelude::*;
use leptos::tachys::html::attribute::any_attribute::{AnyAttribute, IntoAnyAttribute};
use leptos::tachys::html::attribute::custom::custom_attribute;
use leptos::tachys::html::class::class;
use leptos::tachys::html::element::{Custom, custom};
use leptos::tachys::html::event::{EventDescriptor, on};
use leptos::tachys::html::node_ref::node_ref;
use leptos::tachys::html::property::prop;
use leptos::tachys::html::style::style;
use leptos::tachys::view::any_view::{AnyView, IntoAny};
use leptos::tachys::view::iterators::StaticVec;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use wasm_bindgen::JsCast;

/// A reactive value, shared (one type per value type).
pub type Dyn<T> = Arc<Mutex<dyn FnMut() -> T + Send>>;

/// A node reference to an element built here.
pub type ElRef = NodeRef<Custom<&'static str>>;

/// Make a reactive value of a closure.
pub fn dynv<T: 'static>(f: impl Fn() -> T + Send + 'static) -> Dyn<T> {
    Arc::new(Mutex::new(f))
}

/// An element being built.
#[must_use]
pub struct El(Box<ElInner>);

/// Boxed, so that the builder's calls pass and return one pointer, not the parts.
struct ElInner {
    tag: &'static str,
    svg: bool,
    attrs: Vec<AnyAttribute>,
    children: Vec<AnyView>,
}

/// Start an element (tag name in upper case).
pub fn el(tag: &'static str) -> El {
    El(Box::new(ElInner {
        tag,
        svg: false,
        attrs: Vec::new(),
        children: Vec::new(),
    }))
}

/// Start an SVG element (tag name as SVG spells it: `g`, `path`, `rect`, `text`,
/// `title`, `svg`, `defs`, `marker`).
pub fn svg_el(tag: &'static str) -> El {
    El(Box::new(ElInner {
        tag,
        svg: true,
        attrs: Vec::new(),
        children: Vec::new(),
    }))
}

/// Start an element with a fixed `class`.
#[inline(never)]
pub fn elc(tag: &'static str, class: &'static str) -> El {
    el(tag).attr("class", class)
}

impl El {
    #[inline(never)]
    fn push_attr(mut self, a: AnyAttribute) -> El {
        self.0.attrs.push(a);
        self
    }

    #[inline(never)]
    fn push_child(mut self, c: AnyView) -> El {
        self.0.children.push(c);
        self
    }

    /// A fixed attribute (`class`, `title`, `data-testid`, …).
    #[inline(never)]
    pub fn attr(self, name: &'static str, value: &'static str) -> El {
        self.push_attr(custom_attribute(name, value).into_any_attr())
    }

    /// An attribute with a computed text.
    #[inline(never)]
    pub fn attr_string(self, name: &'static str, value: String) -> El {
        self.push_attr(custom_attribute(name, value).into_any_attr())
    }

    /// An attribute that follows signals.
    pub fn attr_dyn(self, name: &'static str, value: impl Fn() -> String + Send + 'static) -> El {
        self.attr_dyn_erased(name, dynv(value))
    }

    #[inline(never)]
    fn attr_dyn_erased(self, name: &'static str, value: Dyn<String>) -> El {
        self.push_attr(custom_attribute(name, value).into_any_attr())
    }

    /// A fixed text attribute that follows signals (`&'static str` values).
    pub fn attr_str_dyn(
        self,
        name: &'static str,
        value: impl Fn() -> &'static str + Send + 'static,
    ) -> El {
        self.attr_str_dyn_erased(name, dynv(value))
    }

    #[inline(never)]
    fn attr_str_dyn_erased(self, name: &'static str, value: Dyn<&'static str>) -> El {
        self.push_attr(custom_attribute(name, value).into_any_attr())
    }

    /// A boolean attribute (`disabled`, …) that follows signals: present when true.
    pub fn flag_dyn(self, name: &'static str, on: impl Fn() -> bool + Send + 'static) -> El {
        self.flag_dyn_erased(name, dynv(on))
    }

    #[inline(never)]
    fn flag_dyn_erased(self, name: &'static str, on: Dyn<bool>) -> El {
        self.push_attr(custom_attribute(name, on).into_any_attr())
    }

    /// `class:name=…`: a class that follows signals.
    pub fn class_dyn(self, name: &'static str, on: impl Fn() -> bool + Send + 'static) -> El {
        self.class_dyn_erased(name, dynv(on))
    }

    #[inline(never)]
    fn class_dyn_erased(self, name: &'static str, on: Dyn<bool>) -> El {
        self.push_attr(class((name, on)).into_any_attr())
    }

    /// `style:name=…` that follows signals.
    pub fn style_dyn(self, name: &'static str, value: impl Fn() -> String + Send + 'static) -> El {
        self.style_dyn_erased(name, dynv(value))
    }

    #[inline(never)]
    fn style_dyn_erased(self, name: &'static str, value: Dyn<String>) -> El {
        self.push_attr(style((name, value)).into_any_attr())
    }

    /// `prop:name=…` with a text value that follows signals.
    pub fn prop_dyn(self, name: &'static str, value: impl Fn() -> String + Send + 'static) -> El {
        self.prop_dyn_erased(name, dynv(value))
    }

    #[inline(never)]
    fn prop_dyn_erased(self, name: &'static str, value: Dyn<String>) -> El {
        self.push_attr(prop(name, value).into_any_attr())
    }

    /// `prop:name=…` with a fixed text.
    #[inline(never)]
    pub fn prop_string(self, name: &'static str, value: String) -> El {
        self.push_attr(prop(name, value).into_any_attr())
    }

    /// `prop:name=…` with a boolean value that follows signals.
    pub fn prop_flag(self, name: &'static str, value: impl Fn() -> bool + Send + 'static) -> El {
        self.prop_flag_erased(name, dynv(value))
    }

    #[inline(never)]
    fn prop_flag_erased(self, name: &'static str, value: Dyn<bool>) -> El {
        self.push_attr(prop(name, value).into_any_attr())
    }

    /// `node_ref=…`.
    #[inline(never)]
    pub fn node_ref(self, r: ElRef) -> El {
        self.push_attr(node_ref::<Custom<&'static str>, _>(r).into_any_attr())
    }

    /// `node_ref=…` of the `<svg>` element.
    #[inline(never)]
    pub fn svg_ref(self, r: NodeRef<leptos::svg::Svg>) -> El {
        self.push_attr(node_ref::<leptos::svg::Svg, _>(r).into_any_attr())
    }

    /// An event handler. Every handler is one attribute type (a custom event by
    /// name with a `web_sys::Event`, cast back to the event's own type): one copy of
    /// tachys' listener code instead of one per event type. Without the `delegation`
    /// feature tachys attaches both the same way (`addEventListener` on the element).
    pub fn on<E>(self, event: E, mut f: impl FnMut(E::EventType) + 'static) -> El
    where
        E: EventDescriptor,
        E::EventType: JsCast + 'static,
    {
        on_erased(
            self,
            event.name(),
            Box::new(move |e: web_sys::Event| f(e.unchecked_into())),
        )
    }

    /// A click handler.
    pub fn on_click(self, f: impl FnMut(leptos::ev::MouseEvent) + 'static) -> El {
        self.on(leptos::ev::click, f)
    }

    /// Fixed text.
    #[inline(never)]
    pub fn text(self, t: &'static str) -> El {
        self.push_child(t.into_any())
    }

    /// Computed text.
    #[inline(never)]
    pub fn string(self, t: String) -> El {
        self.push_child(t.into_any())
    }

    /// Text that follows signals.
    pub fn text_dyn(self, t: impl Fn() -> String + Send + 'static) -> El {
        self.text_dyn_erased(dynv(t))
    }

    #[inline(never)]
    fn text_dyn_erased(self, t: Dyn<String>) -> El {
        self.push_child(t.into_any())
    }

    /// Fixed text chosen by signals.
    pub fn str_dyn(self, t: impl Fn() -> &'static str + Send + 'static) -> El {
        self.str_dyn_erased(dynv(t))
    }

    #[inline(never)]
    fn str_dyn_erased(self, t: Dyn<&'static str>) -> El {
        self.push_child(t.into_any())
    }

    /// A child element.
    #[inline(never)]
    pub fn child(self, c: El) -> El {
        let v = finish(c);
        self.push_child(v)
    }

    /// A child element, if any.
    #[inline(never)]
    pub fn child_opt(self, c: Option<El>) -> El {
        match c {
            Some(c) => self.child(c),
            None => self,
        }
    }

    /// Any view as a child.
    #[inline(never)]
    pub fn view(self, v: AnyView) -> El {
        self.push_child(v)
    }

    /// A part that is rebuilt when the signals it reads change.
    pub fn view_dyn(self, f: impl Fn() -> AnyView + Send + 'static) -> El {
        self.push_child(reactive(f))
    }

    /// A list that is rebuilt (item by item, in place) when the signals it reads change.
    pub fn list_dyn(self, f: impl Fn() -> Vec<AnyView> + Send + 'static) -> El {
        self.list_dyn_erased(dynv(f))
    }

    #[inline(never)]
    fn list_dyn_erased(self, f: Dyn<Vec<AnyView>>) -> El {
        self.push_child(f.into_any())
    }

    pub fn into_any(self) -> AnyView {
        finish(self)
    }
}

/// A view rebuilt when the signals it reads change.
pub fn reactive(f: impl Fn() -> AnyView + Send + 'static) -> AnyView {
    reactive_erased(dynv(f))
}

#[inline(never)]
fn reactive_erased(f: Dyn<AnyView>) -> AnyView {
    f.into_any()
}

/// An element, or nothing.
pub fn opt(e: Option<El>) -> AnyView {
    match e {
        Some(e) => finish(e),
        None => ().into_any(),
    }
}

/// `<Show>`: `yes` while `when` is true, else `no`; rebuilt only when `when` flips.
pub fn show(
    when: impl Fn() -> bool + Send + Sync + 'static,
    yes: impl Fn() -> AnyView + Send + Sync + 'static,
    no: impl Fn() -> AnyView + Send + Sync + 'static,
) -> AnyView {
    show_erased(Box::new(when), Box::new(yes), Box::new(no))
}

type Cond = Box<dyn Fn() -> bool + Send + Sync>;
type Make = Box<dyn Fn() -> AnyView + Send + Sync>;

#[inline(never)]
fn show_erased(when: Cond, yes: Make, no: Make) -> AnyView {
    let on = Memo::new(move |_| when());
    reactive_erased(dynv(move || if on.get() { yes() } else { no() }))
}

/// Sibling views without an element around them.
#[inline(never)]
pub fn fragment(views: Vec<AnyView>) -> AnyView {
    StaticVec::from(views).into_any()
}

/// Nothing (a `show` without fallback).
pub fn nothing() -> AnyView {
    ().into_any()
}

/// An item of a [`keyed`] list: its key and how to make its view.
pub struct Keyed {
    pub key: String,
    pub view: Box<dyn FnOnce() -> AnyView + Send>,
}

impl Keyed {
    pub fn new(key: String, view: impl FnOnce() -> AnyView + Send + 'static) -> Keyed {
        Keyed {
            key,
            view: Box::new(view),
        }
    }
}

/// `<For>`: a list whose items keep their DOM while their key stays.
pub fn keyed(each: impl Fn() -> Vec<Keyed> + Send + 'static) -> AnyView {
    keyed_erased(Box::new(each))
}

#[inline(never)]
fn keyed_erased(each: Box<dyn Fn() -> Vec<Keyed> + Send>) -> AnyView {
    view! {
        <For each=each key=|k: &Keyed| k.key.clone() children=|k: Keyed| (k.view)() />
    }
    .into_any()
}

#[inline(never)]
fn on_erased(el: El, name: Cow<'static, str>, f: Box<dyn FnMut(web_sys::Event)>) -> El {
    let event = leptos::ev::Custom::<web_sys::Event>::new(name);
    el.push_attr(on(event, f).into_any_attr())
}

/// The element `$ctor` with the children and attributes. With `erase_components`
/// (the wasm build, see .cargo/config.toml) `child` appends to one `StaticVec`, as
/// `view!` does; without it (native builds, which only test the pure modules)
/// children are typed tuples, so the list is one `StaticVec` child.
#[cfg(not(erase_components))]
macro_rules! typed {
    ($ctor:expr, $attrs:expr, $children:expr) => {{
        $ctor
            .child(StaticVec::from($children))
            .add_any_attr($attrs)
            .into_any()
    }};
}

#[cfg(erase_components)]
macro_rules! typed {
    ($ctor:expr, $attrs:expr, $children:expr) => {{
        let mut children = $children.into_iter();
        match children.next() {
            None => $ctor.add_any_attr($attrs).into_any(),
            Some(first) => {
                let mut h = $ctor.child(first);
                for c in children {
                    h = h.child(c);
                }
                h.add_any_attr($attrs).into_any()
            }
        }
    }};
}

/// The element: children in order (one `StaticVec`, as `view!` makes), then the attributes.
#[inline(never)]
fn finish(e: El) -> AnyView {
    let ElInner {
        tag,
        svg,
        attrs,
        children,
    } = *e.0;
    if svg {
        return finish_svg(tag, attrs, children);
    }
    typed!(custom(tag), attrs, children)
}

/// An SVG element: tachys' typed element for the tag (they carry the SVG namespace).
#[inline(never)]
fn finish_svg(tag: &'static str, attrs: Vec<AnyAttribute>, children: Vec<AnyView>) -> AnyView {
    use leptos::svg;
    match tag {
        "g" => typed!(svg::g(), attrs, children),
        "path" => typed!(svg::path(), attrs, children),
        "rect" => typed!(svg::rect(), attrs, children),
        "text" => typed!(svg::text(), attrs, children),
        "title" => typed!(svg::title(), attrs, children),
        "svg" => typed!(svg::svg(), attrs, children),
        "defs" => typed!(svg::defs(), attrs, children),
        "marker" => typed!(svg::marker(), attrs, children),
        _ => unreachable!("SVG tag {tag} is not built here"),
    }
}

impl IntoRender for El {
    type Output = AnyView;
    fn into_render(self) -> AnyView {
        finish(self)
    }
}
