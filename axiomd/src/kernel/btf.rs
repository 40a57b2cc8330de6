//! Member offsets of kernel structs, from the kernel's own BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The sensor's Rust programs have no CO-RE relocations, so the few kernel fields they read
//! through a pointer (`task_struct.mm`, `mm_struct.arg_start`) get their offsets from here at
//! start and find them in `CONFIG`. Only what that needs is parsed: the type table's layout
//! (every kind's size, to walk it) and struct and union members, anonymous ones followed.
use std::collections::HashMap;

/// BTF kinds (`include/uapi/linux/btf.h`).
const INT: u32 = 1;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

const MAGIC: u16 = 0xeb9f;

/// One type: its kind, name, the id it refers to (modifiers, typedefs), and for a struct or
/// union its members (name, type, bit offset).
struct Type {
    kind: u32,
    name: u32,
    refers: u32,
    members: Vec<(u32, u32, u32)>,
}

/// A parsed BTF blob: types by id (from 1), names by string offset.
pub(crate) struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BtfError {
    #[error("reading {0}: {1}")]
    Read(&'static str, std::io::Error),
    #[error("not BTF, or cut short at byte {0}")]
    Malformed(usize),
    #[error("unknown BTF kind {0}")]
    Kind(u32),
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed(at))
}

impl Btf {
    /// The running kernel's BTF.
    pub(crate) fn kernel() -> Result<Btf, BtfError> {
        const PATH: &str = "/sys/kernel/btf/vmlinux";
        let b = std::fs::read(PATH).map_err(|e| BtfError::Read(PATH, e))?;
        Btf::parse(&b)
    }

    pub(crate) fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        let magic = b
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or(BtfError::Malformed(0))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed(0));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed(hdr_len + str_off))?
            .to_vec();
        let mut at = hdr_len + type_off;
        let end = at + type_len;
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            refers: 0,
            members: Vec::new(),
        }];
        while at < end {
            let (name, info, refers) = (u32_at(b, at)?, u32_at(b, at + 4)?, u32_at(b, at + 8)?);
            at += 12;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let bitfields = info >> 31 == 1;
            let mut members = Vec::new();
            at += match kind {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let off = u32_at(b, m + 8)?;
                        let bits = if bitfields { off & 0xff_ffff } else { off };
                        members.push((u32_at(b, m)?, u32_at(b, m + 4)?, bits));
                    }
                    vlen * 12
                }
                ENUM | FUNC_PROTO => vlen * 8,
                DATASEC | ENUM64 => vlen * 12,
                2 | 7 | TYPEDEF | VOLATILE | CONST | RESTRICT | 12 | 16 | TYPE_TAG => 0,
                k => return Err(BtfError::Kind(k)),
            };
            types.push(Type {
                kind,
                name,
                refers,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate().skip(1) {
            if matches!(t.kind, STRUCT | UNION) && t.name != 0 {
                let n = btf.name(t.name).to_string();
                btf.by_name.entry(n).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or_default()
    }

    /// Through typedefs and qualifiers to the type itself.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..16 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = t.refers,
                _ => return Some(t),
            }
        }
        None
    }

    /// The byte offset of `member` in struct `name` (looked for in anonymous structs and
    /// unions too, as C reaches it); `None` when the kernel has no such member.
    pub(crate) fn offset(&self, name: &str, member: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().find_map(|&id| {
            let t = self.types.get(id as usize)?;
            self.find(t, member, 0).map(|bits| bits / 8)
        })
    }

    fn find(&self, t: &Type, member: &str, base: u32) -> Option<u32> {
        for &(name, _, bits) in &t.members {
            if name != 0 && self.name(name) == member {
                return Some(base + bits);
            }
        }
        for &(name, ty, bits) in &t.members {
            if name == 0
                && let Some(inner) = self.resolve(ty)
                && matches!(inner.kind, STRUCT | UNION)
                && let Some(found) = self.find(inner, member, base + bits)
            {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `struct inner { long a; long b; }` and
    /// `struct outer { int x; struct { struct inner in; long z; }; }` (anonymous member).
    fn blob() -> Vec<u8> {
        let strings = b"\0inner\0a\0b\0outer\0x\0in\0z\0long\0int\0".to_vec();
        let s = |n: &str| {
            let pat = format!("\0{n}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t: Vec<u8> = Vec::new();
        let mut push = |v: &[u32]| v.iter().for_each(|x| t.extend_from_slice(&x.to_le_bytes()));
        // 1: long (INT, 8 bytes)
        push(&[s("long"), INT << 24, 8, 64]);
        // 2: int
        push(&[s("int"), INT << 24, 4, 32]);
        // 3: struct inner { long a @0; long b @64 }
        push(&[s("inner"), STRUCT << 24 | 2, 16]);
        push(&[s("a"), 1, 0, s("b"), 1, 64]);
        // 4: anonymous struct { struct inner in @0; long z @128 }
        push(&[0, STRUCT << 24 | 2, 24]);
        push(&[s("in"), 3, 0, s("z"), 1, 128]);
        // 5: const of 4 (followed through)
        push(&[0, CONST << 24, 4]);
        // 6: struct outer { int x @0; <anon> @64 }
        push(&[s("outer"), STRUCT << 24 | 2, 32]);
        push(&[s("x"), 2, 0, 0, 5, 64]);
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn members_are_found_in_anonymous_structs_too() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset("inner", "b"), Some(8));
        assert_eq!(btf.offset("outer", "x"), Some(0));
        assert_eq!(btf.offset("outer", "z"), Some(24));
        assert_eq!(btf.offset("outer", "nope"), None);
        assert_eq!(btf.offset("missing", "x"), None);
        assert!(Btf::parse(&[0u8; 24]).is_err());
    }

    /// This machine's kernel: the fields the exec and open programs read exist, 8-byte aligned.
    #[test]
    fn the_running_kernel_has_the_fields_the_sensor_reads() {
        let Ok(btf) = Btf::kernel() else {
            return;
        };
        for (s, m) in [
            ("task_struct", "mm"),
            ("mm_struct", "arg_start"),
            ("mm_struct", "arg_end"),
            ("task_struct", "files"),
            ("files_struct", "fdt"),
            ("fdtable", "fd"),
            ("file", "f_path"),
            ("dentry", "d_parent"),
            ("dentry", "d_name"),
            ("mount", "mnt"),
            ("mount", "mnt_parent"),
            ("mount", "mnt_mountpoint"),
        ] {
            let off = btf.offset(s, m).unwrap_or_else(|| panic!("{s}.{m}"));
            assert!(off > 0 && off % 8 == 0, "{s}.{m} at {off}");
        }
        // The first member: the walk reads it at the vfsmount's own address.
        assert_eq!(btf.offset("vfsmount", "mnt_root"), Some(0));
    }
}
