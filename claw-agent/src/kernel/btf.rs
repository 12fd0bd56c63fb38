//! Member offsets of kernel structs, read from the running kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! Rust eBPF has no CO-RE relocations, so the programs receive the offsets they need as globals
//! at load time. Written here rather than taken from a crate: aya keeps its BTF parser's type
//! accessors private, and btf-rs is LGPL-2.1, which does not suit a statically linked daemon.
//! Only what offset lookups need is parsed: the type section's layout and the string section.

use std::path::Path;

const MAGIC: u16 = 0xeb9f;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct named `{0}`")]
    NoStruct(String),
    #[error("struct `{strukt}` has no member `{member}` in this kernel's BTF")]
    NoMember { strukt: String, member: String },
    #[error("BTF has no function named `{0}`")]
    NoFunction(String),
}

/// One type record: its kind, name, the `size_or_type` word, its entry count (`vlen`: members,
/// parameters) and, for structs and unions, members.
struct Type {
    kind: u32,
    name_off: u32,
    size_or_type: u32,
    vlen: usize,
    members: Vec<Member>,
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// The parsed type and string sections of one BTF blob (little-endian, as on x86_64 and arm64).
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (big-endian BTF is not supported)",
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = hdr_len + u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = hdr_len + u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let type_section = data
            .get(type_off..type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type id 0 is `void`; ids count from 1 in section order.
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            size_or_type: 0,
            vlen: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < type_section.len() {
            let name_off = u32_at(type_section, at)?;
            let info = u32_at(type_section, at + 4)?;
            let size_or_type = u32_at(type_section, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let bitfield_offsets = info >> 31 == 1;
            let mut members = Vec::new();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for i in 0..vlen {
                    let m = at + 12 * i;
                    let raw_offset = u32_at(type_section, m + 8)?;
                    members.push(Member {
                        name_off: u32_at(type_section, m)?,
                        type_id: u32_at(type_section, m + 4)?,
                        bit_offset: if bitfield_offsets {
                            raw_offset & 0xff_ffff
                        } else {
                            raw_offset
                        },
                    });
                }
            }
            at += trailing_bytes(kind, vlen)?;
            types.push(Type {
                kind,
                name_off,
                size_or_type,
                vlen,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous structs and unions
    /// (in 6.12 `f_path` sits inside one).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = self.struct_id(strukt)?;
        self.find_member(id, member.as_bytes(), 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    /// How many parameters function `name` takes (LSM hooks gained some: 6.8 added the mount's
    /// idmap in front of inode_setattr's dentry).
    pub fn parameter_count(&self, name: &str) -> Result<usize, BtfError> {
        let function = self
            .types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoFunction(name.to_owned()))?;
        self.types
            .get(function.size_or_type as usize)
            .map(|proto| proto.vlen)
            .ok_or(BtfError::Malformed("a function without its prototype"))
    }

    /// Whether `member` of `struct strukt` is a pointer (`file.f_owner` became one in 6.12).
    pub fn member_is_pointer(&self, strukt: &str, member: &str) -> Result<bool, BtfError> {
        let id = self.struct_id(strukt)?;
        let (_, type_id) = self
            .find_member_typed(id, member.as_bytes(), 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })?;
        let kind = self
            .resolve(type_id)
            .and_then(|id| self.types.get(id as usize))
            .map(|t| t.kind);
        Ok(kind == Some(KIND_PTR))
    }

    fn struct_id(&self, strukt: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt.as_bytes())
            .map(|id| id as u32)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))
    }

    fn find_member(&self, type_id: u32, member: &[u8], base_bits: u32) -> Option<u32> {
        self.find_member_typed(type_id, member, base_bits)
            .map(|(bits, _)| bits)
    }

    /// The member's bit offset and type id.
    fn find_member_typed(&self, type_id: u32, member: &[u8], base_bits: u32) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(type_id)? as usize)?;
        for m in &t.members {
            let bits = base_bits + m.bit_offset;
            if m.name_off == 0 {
                if let Some(found) = self.find_member_typed(m.type_id, member, bits) {
                    return Some(found);
                }
            } else if self.name(m.name_off) == member {
                return Some((bits, m.type_id));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut type_id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.types.get(type_id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    type_id = t.size_or_type
                }
                _ => return Some(type_id),
            }
        }
        None
    }
}

/// Bytes that follow the 12-byte common header of a type record of `kind` with `vlen` entries.
fn trailing_bytes(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        // int, var, decl_tag: one u32
        1 | 14 | 17 => 4,
        // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
        2 | 7..=12 | 16 | 18 => 0,
        // array: element type, index type, count
        3 => 12,
        // struct, union, datasec, enum64: 12 bytes an entry
        4 | 5 | 15 | 19 => 12 * vlen,
        // enum, func_proto: 8 bytes an entry
        6 | 13 => 8 * vlen,
        _ => return Err(BtfError::Malformed("unknown type kind")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct file { int a; union { int b; struct path f_path; }; }` where the
    /// union starts at byte 8, as 6.12 nests `f_path`.
    fn synthetic() -> Vec<u8> {
        let strings = b"\0int\0file\0a\0b\0f_path\0path\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut record = |name_off: u32, info: u32, size: u32, tail: &[u32]| {
            for word in [name_off, info, size].iter().chain(tail) {
                types.extend_from_slice(&word.to_le_bytes());
            }
        };
        // 1: int
        record(name("int"), 1 << 24, 4, &[32]);
        // 2: struct path { int a; } (8 bytes)
        record(name("path"), (4 << 24) | 1, 8, &[name("a"), 1, 0]);
        // 3: anonymous union { int b; struct path f_path; }
        record(
            0,
            (5 << 24) | 2,
            8,
            &[name("b"), 1, 0, name("f_path"), 2, 0],
        );
        // 4: typedef to the union, as a qualifier chain to follow
        record(0, 8 << 24, 3, &[]);
        // 5: struct file { int a; <anon> at bit 64 }
        record(
            name("file"),
            (4 << 24) | 2,
            16,
            &[name("a"), 1, 0, 0, 4, 64],
        );
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_member_inside_anonymous_union() {
        let btf = Btf::parse(&synthetic()).unwrap();
        assert_eq!(btf.member_offset("file", "f_path").unwrap(), 8);
        assert_eq!(btf.member_offset("file", "a").unwrap(), 0);
    }

    #[test]
    fn missing_struct_and_member_are_named() {
        let btf = Btf::parse(&synthetic()).unwrap();
        let err = btf.member_offset("inode", "i_mode").unwrap_err();
        assert_eq!(err.to_string(), "BTF has no struct named `inode`");
        let err = btf.member_offset("file", "f_mode").unwrap_err();
        assert!(err.to_string().contains("no member `f_mode`"), "{err}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Btf::parse(b"not btf at all, not at all"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn running_kernel_has_file_f_path() {
        let btf = Btf::from_file(Path::new(crate::defaults::VMLINUX_BTF))
            .expect("this kernel publishes BTF");
        let offset = btf.member_offset("file", "f_path").unwrap();
        // 16 on 6.1, 64 on 6.12 and later; whatever it is, it lies inside struct file.
        assert!(offset > 0 && offset.is_multiple_of(8), "f_path at {offset}");
        // f_path is held, f_inode pointed to, on every kernel.
        assert!(!btf.member_is_pointer("file", "f_path").unwrap());
        assert!(btf.member_is_pointer("file", "f_inode").unwrap());
        // inode_setattr: (dentry, attr) before 6.8, (idmap, dentry, attr) since.
        let count = btf.parameter_count("bpf_lsm_inode_setattr").unwrap();
        assert!(count == 2 || count == 3, "{count}");
    }
}
