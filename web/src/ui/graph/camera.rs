//! The graph's pan and zoom: fit, zoom about a point, keep a node in view,
//! and the orientation that shows the graph biggest.

use crate::editing::Editor;
use crate::layout::{NODE_H, NODE_W};
use leptos::prelude::*;

pub const MIN_ZOOM: f64 = 0.08;
pub const MAX_ZOOM: f64 = 3.0;
/// Below this zoom labels are hard to read: a document opens at this zoom instead.
const READABLE_ZOOM: f64 = 0.6;

/// The pan (`x`, `y`) and zoom of the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    pub x: f64,
    pub y: f64,
    pub zoom: f64,
}

/// The viewport and the SVG it applies to; `Copy`.
#[derive(Clone, Copy)]
pub struct Camera {
    pub view: RwSignal<Viewport>,
    pub svg: NodeRef<leptos::svg::Svg>,
    d: Editor,
}

impl Camera {
    pub fn new(d: Editor) -> Camera {
        Camera {
            view: RwSignal::new(Viewport {
                x: 0.0,
                y: 0.0,
                zoom: 1.0,
            }),
            svg: NodeRef::new(),
            d,
        }
    }

    /// The SVG's size on screen (called from animation frames: the graph may be gone).
    pub fn size(&self) -> Option<(f64, f64)> {
        self.view.try_get_untracked()?;
        self.svg.get_untracked().map(|s| {
            let r = s.get_bounding_client_rect();
            (r.width(), r.height())
        })
    }

    /// Fit the whole graph; with `readable`, a big graph is shown from its start
    /// at a zoom where labels can be read instead.
    pub fn fit_with(&self, readable: bool) {
        let Some((w, h)) = self.size() else { return };
        if w < 10.0 || h < 10.0 {
            return;
        }
        let (lw, lh) = self
            .d
            .layout
            .with_untracked(|l| (l.width.max(1.0), l.height.max(1.0)));
        let k = (w / lw).min(h / lh).clamp(MIN_ZOOM, 1.0);
        if readable && k < READABLE_ZOOM {
            let zoom = READABLE_ZOOM;
            // The first levels in view, centred across (levels are centred too).
            self.view.set(if self.d.vertical.get_untracked() {
                Viewport {
                    x: (w - lw * zoom) / 2.0,
                    y: 0.0,
                    zoom,
                }
            } else {
                Viewport {
                    x: 0.0,
                    y: (h - lh * zoom) / 2.0,
                    zoom,
                }
            });
            return;
        }
        self.view.set(Viewport {
            x: (w - lw * k) / 2.0,
            y: ((h - lh * k) / 2.0).max(0.0),
            zoom: k,
        });
    }

    pub fn fit(&self) {
        self.fit_with(false);
    }

    pub fn zoom_at(&self, factor: f64, cx: f64, cy: f64) {
        let v = self.view.get_untracked();
        let k2 = (v.zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
        self.view.set(Viewport {
            x: cx - (cx - v.x) * k2 / v.zoom,
            y: cy - (cy - v.y) * k2 / v.zoom,
            zoom: k2,
        });
    }

    pub fn zoom_center(&self, factor: f64) {
        let (w, h) = self.size().unwrap_or((600.0, 400.0));
        self.zoom_at(factor, w / 2.0, h / 2.0);
    }

    pub fn pan(&self, dx: f64, dy: f64) {
        self.view.update(|v| {
            v.x += dx;
            v.y += dy;
        });
    }

    /// Pan so that the node at (`x`, `y`) (graph coordinates) is fully in view.
    pub fn reveal(&self, x: f64, y: f64) {
        let Some((w, h)) = self.size() else { return };
        let v = self.view.get_untracked();
        let (left, top) = (v.x + x * v.zoom, v.y + y * v.zoom);
        let (right, bottom) = (left + NODE_W * v.zoom, top + NODE_H * v.zoom);
        let margin = 24.0;
        let dx = if left < margin {
            margin - left
        } else if right > w - margin {
            (w - margin) - right
        } else {
            0.0
        };
        let dy = if top < margin {
            margin - top
        } else if bottom > h - margin {
            (h - margin) - bottom
        } else {
            0.0
        };
        if dx != 0.0 || dy != 0.0 {
            self.pan(dx, dy);
        }
    }

    /// Pick the orientation that shows the graph biggest in this viewport.
    pub fn orient(&self) {
        let Some((w, h)) = self.size() else { return };
        let (levels, widest) = self.d.layout.with_untracked(|l| (l.levels, l.widest));
        let scale = |v: bool| {
            let (lw, lh) = crate::layout::dims(levels, widest, v);
            (w / lw.max(1.0)).min(h / lh.max(1.0))
        };
        let vertical = scale(true) > scale(false) * 1.1;
        if vertical != self.d.vertical.get_untracked() {
            self.d.vertical.set(vertical);
        }
    }
}
