//! Post-processing of the page's wasm after trunk (no dependencies): drop the
//! custom sections wasm-bindgen writes, and order the functions so that gzip
//! finds more repeats.
//!
//! The order: functions grouped by their type (signature), then by size (in
//! steps of 64 bytes), then sorted by their bytes. Monomorphized copies of one
//! generic function (drop glue, closure shims, map and signal code per type)
//! share a signature and are near-identical, so they end up next to each other,
//! inside gzip's 32 KB window; the linker leaves them scattered. (Measured on the
//! page, gzipped: by bytes alone −6.5 KB, by type then bytes −14.4 KB, with the
//! size steps −15.7 KB.) Function indices are renumbered everywhere
//! they occur (calls, `ref.func`, the function, export, start, element and global
//! sections); table slots keep their positions, so function pointers in memory
//! stay valid. Anything this does not understand (an unknown opcode or section
//! layout) leaves the module as it was.

/// Drop the custom sections of these names; None if the module does not parse.
pub fn without_sections(bytes: &[u8], drop: &[&str]) -> Option<Vec<u8>> {
    let sections = sections(bytes)?;
    let mut out = bytes[..8].to_vec();
    for s in &sections {
        let dropped = s.id == 0 && {
            let mut r = Reader::new(s.body);
            let name = r.name()?;
            drop.iter().any(|d| d.as_bytes() == name)
        };
        if !dropped {
            out.extend_from_slice(s.whole);
        }
    }
    Some(out)
}

/// The module with its functions in the order described in the module's doc
/// None if it does not parse or has a name section (whose indices this would
/// have to renumber too).
pub fn sort_functions(bytes: &[u8]) -> Option<Vec<u8>> {
    let sections = sections(bytes)?;
    let mut imported = 0u32;
    let mut bodies: Vec<&[u8]> = Vec::new();
    let mut types: Vec<u32> = Vec::new();
    for s in &sections {
        let mut r = Reader::new(s.body);
        match s.id {
            0 if r.name()? == b"name" => return None,
            2 => {
                for _ in 0..r.u32()? {
                    r.name()?;
                    r.name()?;
                    match r.byte()? {
                        0 => {
                            r.u32()?;
                            imported += 1;
                        }
                        1 => {
                            r.byte()?;
                            r.limits()?;
                        }
                        2 => r.limits()?,
                        3 => {
                            r.byte()?;
                            r.byte()?;
                        }
                        4 => {
                            r.byte()?;
                            r.u32()?;
                        }
                        _ => return None,
                    }
                }
            }
            3 => {
                for _ in 0..r.u32()? {
                    types.push(r.u32()?);
                }
            }
            10 => {
                for _ in 0..r.u32()? {
                    let n = r.u32()? as usize;
                    bodies.push(r.take(n)?);
                }
            }
            _ => {}
        }
        if matches!(s.id, 2 | 3 | 10) && !r.done() {
            return None;
        }
    }
    if bodies.len() != types.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..bodies.len()).collect();
    // By type, then by size (in steps of 64 bytes), then by bytes.
    order.sort_by(|&a, &b| {
        let key = |i: usize| (types[i], bodies[i].len() / 64, bodies[i]);
        key(a).cmp(&key(b)).then(a.cmp(&b))
    });
    // new index of each old one
    let mut map: Vec<u32> = (0..imported).collect();
    map.resize(imported as usize + bodies.len(), 0);
    for (new, &old) in order.iter().enumerate() {
        map[imported as usize + old] = imported + new as u32;
    }
    let remap = |f: u32| map.get(f as usize).copied();

    let mut out = bytes[..8].to_vec();
    for s in &sections {
        let mut r = Reader::new(s.body);
        let mut w = Vec::new();
        match s.id {
            3 => {
                leb(&mut w, order.len() as u64);
                for &old in &order {
                    leb(&mut w, types[old].into());
                }
            }
            6 => {
                let n = r.u32()?;
                leb(&mut w, n.into());
                for _ in 0..n {
                    let start = r.pos;
                    r.byte()?;
                    r.byte()?;
                    w.extend_from_slice(&s.body[start..r.pos]);
                    code(&mut r, &mut w, &remap, true)?;
                }
            }
            7 => {
                let n = r.u32()?;
                leb(&mut w, n.into());
                for _ in 0..n {
                    let start = r.pos;
                    r.name()?;
                    let kind = r.byte()?;
                    w.extend_from_slice(&s.body[start..r.pos]);
                    let idx = r.u32()?;
                    leb(&mut w, if kind == 0 { remap(idx)? } else { idx }.into());
                }
            }
            8 => leb(&mut w, remap(r.u32()?)?.into()),
            9 => {
                let n = r.u32()?;
                leb(&mut w, n.into());
                for _ in 0..n {
                    let flags = r.u32()?;
                    leb(&mut w, flags.into());
                    if flags > 7 {
                        return None;
                    }
                    if flags == 2 || flags == 6 {
                        leb(&mut w, r.u32()?.into()); // table
                    }
                    if flags & 1 == 0 {
                        code(&mut r, &mut w, &remap, true)?; // offset
                    }
                    if flags & 3 != 0 {
                        w.push(r.byte()?); // element kind or reference type
                    }
                    let items = r.u32()?;
                    leb(&mut w, items.into());
                    for _ in 0..items {
                        if flags & 4 == 0 {
                            leb(&mut w, remap(r.u32()?)?.into());
                        } else {
                            code(&mut r, &mut w, &remap, true)?;
                        }
                    }
                }
            }
            10 => {
                leb(&mut w, order.len() as u64);
                let mut body = Vec::new();
                for &old in &order {
                    body.clear();
                    let mut b = Reader::new(bodies[old]);
                    for _ in 0..b.u32()? {
                        b.u32()?;
                        b.byte()?;
                    }
                    body.extend_from_slice(&bodies[old][..b.pos]);
                    code(&mut b, &mut body, &remap, false)?;
                    if !b.done() {
                        return None;
                    }
                    leb(&mut w, body.len() as u64);
                    w.extend_from_slice(&body);
                }
            }
            _ => {
                out.extend_from_slice(s.whole);
                continue;
            }
        }
        if !r.done() && !matches!(s.id, 3 | 10) {
            return None;
        }
        out.push(s.id);
        leb(&mut out, w.len() as u64);
        out.extend_from_slice(&w);
    }
    Some(out)
}

/// Copy instructions from `r` to `w`, renumbering functions: a constant
/// expression (`expr`: up to its `end`) or a function body (to the reader's end).
fn code(
    r: &mut Reader,
    w: &mut Vec<u8>,
    remap: &impl Fn(u32) -> Option<u32>,
    expr: bool,
) -> Option<()> {
    loop {
        if !expr && r.done() {
            return Some(());
        }
        let start = r.pos;
        let op = r.byte()?;
        match op {
            // call, ref.func
            0x10 | 0xD2 => {
                w.push(op);
                leb(w, remap(r.u32()?)?.into());
                continue;
            }
            0x0B if expr => {
                w.push(op);
                return Some(());
            }
            0x00 | 0x01 | 0x05 | 0x0B | 0x0F | 0x1A | 0x1B | 0xD1 => {}
            0x45..=0xC4 => {}
            0x02..=0x04 => {
                let t = r.byte()?;
                if !matches!(t, 0x40 | 0x7B..=0x7F | 0x70 | 0x6F) {
                    r.pos -= 1;
                    r.skip_leb()?; // a type index (s33)
                }
            }
            0x0C | 0x0D | 0x20..=0x26 | 0x3F | 0x40 => r.skip_leb()?,
            0x0E => {
                for _ in 0..r.u32()? {
                    r.skip_leb()?;
                }
                r.skip_leb()?;
            }
            0x11 => {
                r.skip_leb()?;
                r.skip_leb()?;
            }
            0x1C => {
                let n = r.u32()? as usize;
                r.take(n)?;
            }
            0x28..=0x3E => {
                let align = r.u32()?;
                if align & 0x40 != 0 {
                    r.skip_leb()?; // memory index
                }
                r.skip_leb()?;
            }
            0x41 | 0x42 => r.skip_leb()?,
            0x43 => {
                r.take(4)?;
            }
            0x44 => {
                r.take(8)?;
            }
            0xD0 => {
                r.byte()?;
            }
            0xFC => match r.u32()? {
                0..=7 => {}
                8 | 10 | 12 | 14 => {
                    r.skip_leb()?;
                    r.skip_leb()?;
                }
                9 | 11 | 13 | 15..=17 => r.skip_leb()?,
                _ => return None,
            },
            _ => return None,
        }
        w.extend_from_slice(&r.bytes[start..r.pos]);
    }
}

struct Section<'a> {
    id: u8,
    body: &'a [u8],
    /// The id, the size and the body.
    whole: &'a [u8],
}

fn sections(bytes: &[u8]) -> Option<Vec<Section<'_>>> {
    if bytes.get(..8)? != b"\0asm\x01\0\0\0" {
        return None;
    }
    let mut r = Reader::new(bytes);
    r.pos = 8;
    let mut out = Vec::new();
    while !r.done() {
        let start = r.pos;
        let id = r.byte()?;
        let n = r.u32()? as usize;
        let body = r.take(n)?;
        out.push(Section {
            id,
            body,
            whole: &bytes[start..r.pos],
        });
    }
    Some(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(v).ok();
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }

    /// Any LEB128 number (signed or not, up to 64 bits).
    fn skip_leb(&mut self) -> Option<()> {
        for _ in 0..10 {
            if self.byte()? & 0x80 == 0 {
                return Some(());
            }
        }
        None
    }

    fn name(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn limits(&mut self) -> Option<()> {
        let flags = self.byte()?;
        self.skip_leb()?;
        if flags & 1 != 0 {
            self.skip_leb()?;
        }
        Some(())
    }
}

fn leb(w: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            w.push(b);
            return;
        }
        w.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![id];
        leb(&mut s, body.len() as u64);
        s.extend_from_slice(body);
        s
    }

    fn custom(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = vec![name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(body);
        section(0, &b)
    }

    const MAGIC: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn custom_sections_are_dropped() {
        let types = section(1, &[1, 0x60, 0, 0]);
        let mut m = MAGIC.to_vec();
        m.extend(&types);
        m.extend(custom("name", &[1, 2, 3]));
        m.extend(custom("target_features", &[0]));
        m.extend(custom("producers", &[9]));
        let mut want = MAGIC.to_vec();
        want.extend(&types);
        want.extend(custom("target_features", &[0]));
        assert_eq!(without_sections(&m, &["name", "producers"]), Some(want));
        assert_eq!(without_sections(&m[..m.len() - 1], &["name"]), None);
        assert_eq!(without_sections(b"not wasm", &["name"]), None);
    }

    /// A module with one imported function (0) and three bodies (1, 2, 3) whose
    /// order is 1, 3, 2; calls, `ref.func`, exports, the start function,
    /// a table element and a global follow the functions.
    #[test]
    fn functions_are_sorted_and_renumbered() {
        // types: 0 = () -> (), 1 = () -> i32
        let types = section(1, &[2, 0x60, 0, 0, 0x60, 0, 1, 0x7F]);
        // import "m" "f" func type 0
        let imports = section(2, &[1, 1, b'm', 1, b'f', 0, 0]);
        let funcs = section(3, &[3, 0, 1, 0]);
        let table = section(4, &[1, 0x70, 0, 4]);
        // global funcref = ref.func 2
        let globals = section(6, &[1, 0x70, 0, 0xD2, 2, 0x0B]);
        // export "a" = func 1, "b" = func 3
        let exports = section(7, &[2, 1, b'a', 0, 1, 1, b'b', 0, 3]);
        let start = section(8, &[2]);
        // table 0 at offset 0: funcs 3, 1
        let elems = section(9, &[1, 0, 0x41, 0, 0x0B, 2, 3, 1]);
        let f1 = [0u8, 0x10, 3, 0x1A, 0x0B]; // call 3; drop
        let f2 = [0u8, 0x41, 5, 0x0B]; // i32.const 5
        let f3 = [0u8, 0xD2, 1, 0x1A, 0x0B]; // ref.func 1; drop
        let mut code = vec![3];
        for f in [&f1[..], &f2, &f3] {
            leb(&mut code, f.len() as u64);
            code.extend_from_slice(f);
        }
        let code = section(10, &code);
        let module = |funcs: &[u8],
                      globals: &[u8],
                      exports: &[u8],
                      start: &[u8],
                      elems: &[u8],
                      code: &[u8]| {
            let mut m = MAGIC.to_vec();
            for s in [
                &types[..],
                &imports,
                funcs,
                &table,
                globals,
                exports,
                start,
                elems,
                code,
            ] {
                m.extend_from_slice(s);
            }
            m
        };
        let m = module(&funcs, &globals, &exports, &start, &elems, &code);
        // By type: 1 and 3 (type 0), then 2 (type 1), though by bytes alone 2
        // would come second. So old → new: 0 → 0, 1 → 1, 3 → 2, 2 → 3.
        let want_code = {
            let g1 = [0u8, 0x10, 2, 0x1A, 0x0B]; // old 1: call 3 → 2
            let g3 = [0u8, 0xD2, 1, 0x1A, 0x0B]; // old 3: ref.func 1 → 1
            let mut c = vec![3];
            for f in [&g1[..], &g3, &f2] {
                leb(&mut c, f.len() as u64);
                c.extend_from_slice(f);
            }
            section(10, &c)
        };
        let want = module(
            &section(3, &[3, 0, 0, 1]),
            &section(6, &[1, 0x70, 0, 0xD2, 3, 0x0B]),
            &section(7, &[2, 1, b'a', 0, 1, 1, b'b', 0, 2]),
            &section(8, &[3]),
            &section(9, &[1, 0, 0x41, 0, 0x0B, 2, 2, 1]),
            &want_code,
        );
        assert_eq!(sort_functions(&m), Some(want));
        // An opcode it does not know (0xFD, SIMD) leaves the module alone.
        let mut odd = f2.to_vec();
        odd.insert(3, 0xFD); // after i32.const 5
        let mut c = vec![3];
        for f in [&f1[..], &odd, &f3] {
            leb(&mut c, f.len() as u64);
            c.extend_from_slice(f);
        }
        let odd = module(&funcs, &globals, &exports, &start, &elems, &section(10, &c));
        assert_eq!(sort_functions(&odd), None);
        // So does a name section.
        let mut named = m.clone();
        named.extend(custom("name", &[]));
        assert_eq!(sort_functions(&named), None);
    }
}
