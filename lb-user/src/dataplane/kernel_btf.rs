//! Sizes of the running kernel's own structures, read from its BTF (`/sys/kernel/btf/vmlinux`).
//! What a map locks depends on them, and they differ between kernel builds of one version
//! (`struct bpf_htab` has been seen at 832 and 896 bytes on Linux 6.18): a memory figure that
//! is to match the kernel's count must ask the kernel, not a constant.
//!
//! Only what that needs: the type section walked once, a struct's size, its members, and an
//! array's length. Format: Documentation/bpf/btf.rst.

use std::fmt;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, PartialEq, Eq)]
pub enum BtfError {
    Truncated,
    BadMagic(u16),
    Version(u32),
    UnknownKind(u32),
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Truncated => write!(f, "BTF data ends inside a header or type"),
            BtfError::BadMagic(m) => write!(f, "not BTF (magic {m:#06x})"),
            BtfError::Version(v) => write!(f, "BTF version {v} is not known to this xdplb"),
            BtfError::UnknownKind(k) => write!(f, "BTF type kind {k} is not known to this xdplb"),
        }
    }
}

impl std::error::Error for BtfError {}

/// One type's common header and where its kind-specific data starts.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    /// Size for structs, unions, ints and enums; the type referred to for pointers, typedefs
    /// and qualifiers.
    size: u32,
    extra: usize,
}

/// A kernel's BTF, parsed as far as finding a type by name and reading its layout.
pub struct KernelBtf {
    data: Vec<u8>,
    strings: usize,
    strings_len: usize,
    /// Types by id (id 0 is `void`, not stored: index = id - 1).
    types: Vec<Type>,
}

/// A struct's size and its members (name, type id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    pub size: u64,
    pub members: Vec<(String, u32)>,
}

impl KernelBtf {
    /// The running kernel's BTF.
    pub fn running() -> std::io::Result<KernelBtf> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        KernelBtf::parse(data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    pub fn parse(data: Vec<u8>) -> Result<KernelBtf, BtfError> {
        let word = |at: usize| le_u32(&data, at).ok_or(BtfError::Truncated);
        let magic = (word(0)? & 0xffff) as u16;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let version = (word(0)? >> 16) & 0xff;
        if version != 1 {
            return Err(BtfError::Version(version));
        }
        let hdr_len = word(4)? as usize;
        let (type_off, type_len) = (word(8)? as usize, word(12)? as usize);
        let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
        let add = |a: usize, b: usize| a.checked_add(b).ok_or(BtfError::Truncated);
        let (start, end) = (add(hdr_len, type_off)?, add(add(hdr_len, type_off)?, type_len)?);
        if end > data.len() || add(add(hdr_len, str_off)?, str_len)? > data.len() {
            return Err(BtfError::Truncated);
        }
        let mut types = Vec::new();
        let mut at = start;
        while at < end {
            let info = word(at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let ty = Type { name_off: word(at)?, kind, vlen, size: word(at + 8)?, extra: at + 12 };
            // Each kind's data after the 12-byte header.
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_PTR | 7..=12 | 16 | 18 => 0,
                // A kind newer than this reader: its length is unknown, so nothing after it
                // can be found (the caller falls back to estimates).
                other => return Err(BtfError::UnknownKind(other)),
            };
            at = ty.extra + extra;
            types.push(ty);
        }
        if at != end {
            return Err(BtfError::Truncated);
        }
        Ok(KernelBtf { strings: hdr_len + str_off, strings_len: str_len, data, types })
    }

    fn name(&self, off: u32) -> &str {
        let from = self.strings + (off as usize).min(self.strings_len);
        let bytes = self.data.get(from..self.strings + self.strings_len).unwrap_or_default();
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(bytes.get(..len).unwrap_or_default()).unwrap_or("")
    }

    /// The struct named `name` (the first, if several share it).
    pub fn struct_layout(&self, name: &str) -> Option<StructLayout> {
        let ty = self.types.iter().find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name)?;
        let members = (0..ty.vlen as usize)
            .map(|i| {
                let m = ty.extra + 12 * i;
                Some((self.name(le_u32(&self.data, m)?).to_string(), le_u32(&self.data, m + 4)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(StructLayout { size: u64::from(ty.size), members })
    }

    /// The size of what the pointer type `id` points at, through typedefs and qualifiers (`None`
    /// if it is not a pointer to a struct or union).
    pub fn pointee_size(&self, id: u32) -> Option<u64> {
        let ty = self.types.get((id as usize).checked_sub(1)?)?;
        if ty.kind != KIND_PTR {
            return None;
        }
        let mut id = ty.size;
        // typedef, volatile, const, restrict, type tag: each refers on; a few are enough.
        for _ in 0..8 {
            let t = self.types.get((id as usize).checked_sub(1)?)?;
            match t.kind {
                KIND_STRUCT | KIND_UNION => return Some(u64::from(t.size)),
                8..=11 | 18 => id = t.size,
                _ => return None,
            }
        }
        None
    }

    /// How many elements the array type `id` has (`None` if it is not an array).
    pub fn array_len(&self, id: u32) -> Option<u32> {
        let ty = self.types.get((id as usize).checked_sub(1)?)?;
        if ty.kind != KIND_ARRAY {
            return None;
        }
        le_u32(&self.data, ty.extra + 8)
    }
}

/// The little-endian word at `at`, if `data` has it (BTF is in the kernel's byte order, and
/// the kernels this runs on are little-endian).
fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([*b.first()?, *b.get(1)?, *b.get(2)?, *b.get(3)?]))
}

/// A BTF blob of `types` (each one's words as in the format) and `strings`, for tests.
#[cfg(test)]
pub(crate) fn build(types: &[&[u32]], strings: &[u8]) -> Vec<u8> {
    let types: Vec<u8> = types.iter().flat_map(|t| t.iter()).flat_map(|x| x.to_le_bytes()).collect();
    let mut data = Vec::new();
    data.extend_from_slice(&MAGIC.to_le_bytes());
    data.extend_from_slice(&[1, 0]);
    let len = |n: usize| u32::try_from(n).unwrap();
    for v in [24, 0, len(types.len()), len(types.len()), len(strings.len())] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(&types);
    data.extend_from_slice(strings);
    data
}

/// Kinds, for tests that build BTF.
#[cfg(test)]
pub(crate) mod kind {
    pub const INT: u32 = super::KIND_INT;
    pub const PTR: u32 = super::KIND_PTR;
    pub const STRUCT: u32 = super::KIND_STRUCT;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with: [1] int "int" (4 bytes), [2] array of 8 ints, [3] struct "outer"
    /// (40 bytes) with members "a" (int) and "locks" (the array), [4] const outer, [5] a pointer
    /// to [4].
    fn blob() -> Vec<u8> {
        let types = [
            &[1, KIND_INT << 24, 4, 32][..],
            &[0, KIND_ARRAY << 24, 0, 1, 1, 8],
            &[5, (KIND_STRUCT << 24) | 2, 40, 11, 1, 0, 13, 2, 64],
            &[0, 10 << 24, 3],
            &[0, KIND_PTR << 24, 4],
        ];
        build(&types, b"\0int\0outer\0a\0locks\0")
    }

    #[test]
    fn a_struct_and_its_array_member_are_read() {
        let btf = KernelBtf::parse(blob()).unwrap();
        let outer = btf.struct_layout("outer").unwrap();
        assert_eq!(outer.size, 40);
        assert_eq!(outer.members, vec![("a".to_string(), 1), ("locks".to_string(), 2)]);
        assert_eq!(btf.array_len(2), Some(8));
        assert_eq!(btf.array_len(1), None, "an int");
        assert_eq!(btf.pointee_size(5), Some(40), "through the const");
        assert_eq!(btf.pointee_size(3), None, "not a pointer");
        assert_eq!(btf.pointee_size(99), None, "no such type");
        assert_eq!(btf.struct_layout("int"), None, "not a struct");
        assert_eq!(btf.struct_layout("missing"), None);
    }

    #[test]
    fn damaged_btf_is_an_error_not_a_panic() {
        let data = blob();
        for len in 0..data.len() - 1 {
            // Cut anywhere before the end of the strings: an error (or, cut inside the strings,
            // names that do not match), never a panic.
            let _ = KernelBtf::parse(data[..len].to_vec()).map(|b| b.struct_layout("outer"));
        }
        let mut bad = data.clone();
        bad[0] = 0;
        assert!(matches!(KernelBtf::parse(bad), Err(BtfError::BadMagic(_))));
        let mut odd = data;
        odd[24 + 7] = 31; // the int's kind byte: a kind that does not exist
        assert_eq!(KernelBtf::parse(odd).err(), Some(BtfError::UnknownKind(31)));
    }
}
