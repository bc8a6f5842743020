//! BTF: loading a type blob (`BPF_BTF_LOAD`) and a tiny builder for the few kinds a program
//! with callback subprograms needs (`include/uapi/linux/btf.h`).

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use rustix::io::Errno;

use bpf_ringbuf_sys::{BpfError, Command};

use crate::bpf::{bpf, owned_fd, BtfLoadAttr};
use crate::prog::LOG_BUFFER_SIZE;

/// `BTF_MAGIC`.
pub const BTF_MAGIC: u16 = 0xeb9f;
/// `BTF_VERSION`.
pub const BTF_VERSION: u8 = 1;
/// Size of `struct btf_header`.
pub const BTF_HEADER_LEN: u32 = 24;

/// `BTF_KIND_INT`.
const KIND_INT: u32 = 1;
/// `BTF_KIND_PTR`.
const KIND_PTR: u32 = 2;
/// `BTF_KIND_FUNC`.
const KIND_FUNC: u32 = 12;
/// `BTF_KIND_FUNC_PROTO`.
const KIND_FUNC_PROTO: u32 = 13;
/// `BTF_INT_SIGNED`, in the encoding byte of an INT's extra word.
const INT_SIGNED: u32 = 1 << 0;
/// `BTF_MAX_VLEN`: parameters per prototype.
const MAX_VLEN: usize = 0xffff;

/// Issues BPF_BTF_LOAD, with a log buffer when `log` is given.
fn btf_load_once(blob: &[u8], log: Option<&mut [u8]>) -> Result<OwnedFd, Errno> {
    let mut raw = BtfLoadAttr {
        btf: blob.as_ptr() as usize as u64,
        btf_size: u32::try_from(blob.len()).map_err(|_| Errno::TOOBIG)?,
        ..BtfLoadAttr::default()
    };
    if let Some(log) = log {
        raw.btf_log_level = 1;
        raw.btf_log_size = u32::try_from(log.len()).map_err(|_| Errno::TOOBIG)?;
        raw.btf_log_buf = log.as_mut_ptr() as usize as u64;
    }
    // SAFETY: `BtfLoadAttr` is the BPF_BTF_LOAD layout with no implicit padding. The kernel
    // reads `btf_size` bytes from `btf` and writes at most `btf_log_size` bytes to
    // `btf_log_buf`; both point into borrows that outlive the call.
    let fd = unsafe { bpf(Command::BtfLoad, &mut raw) }?;
    // SAFETY: a successful BPF_BTF_LOAD returns a new descriptor owned by the caller.
    Ok(unsafe { owned_fd(fd) })
}

/// `BPF_BTF_LOAD`: loads a BTF blob (header, type section, string section) and returns the BTF
/// object's file descriptor, to pass as [`ProgLoad::btf_fd`](crate::ProgLoad::btf_fd).
///
/// On failure the load is repeated with `btf_log_level = 1`, and the error carries the first
/// attempt's `errno` and the kernel's BTF log.
///
/// # Errors
///
/// `EINVAL` for a malformed blob (see [`BpfError::log`]), `EPERM` without `CAP_BPF`.
pub fn btf_load(blob: &[u8]) -> Result<OwnedFd, BpfError> {
    let errno = match btf_load_once(blob, None) {
        Ok(fd) => return Ok(fd),
        Err(errno) => errno,
    };
    if errno == Errno::PERM || errno == Errno::TOOBIG {
        return Err(BpfError::new(Command::BtfLoad, errno));
    }
    let mut log = vec![0u8; LOG_BUFFER_SIZE];
    match btf_load_once(blob, Some(&mut log)) {
        Ok(fd) => Ok(fd),
        Err(_) => Err(BpfError::new(Command::BtfLoad, errno).with_log(&log)),
    }
}

/// Linkage of a BTF `FUNC` (`enum btf_func_linkage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FuncLinkage {
    /// `BTF_FUNC_STATIC`: verified in the context of its callers (callbacks).
    Static = 0,
    /// `BTF_FUNC_GLOBAL`: verified on its own against its prototype.
    Global = 1,
    /// `BTF_FUNC_EXTERN`.
    Extern = 2,
}

/// Builds a BTF blob from `INT`, `PTR`, `FUNC_PROTO` and `FUNC` types.
///
/// Type ids start at 1 (0 is `void`) in the order the types are added; strings are stored
/// once each. This is what the verifier needs to accept a program whose subprograms are passed
/// as callbacks (`bpf_loop`, `bpf_user_ringbuf_drain`): one `FUNC` per subprogram, referenced
/// from [`FuncInfo`](crate::FuncInfo) records.
///
/// ```
/// use bpf_ringbuf_testkit::btf::{BtfBuilder, FuncLinkage};
/// let mut btf = BtfBuilder::new();
/// let int = btf.int("int", 4, true);
/// let void_ptr = btf.ptr(0);
/// let proto = btf.func_proto(int, &[("ctx", void_ptr)]);
/// let main = btf.func("main", proto, FuncLinkage::Global);
/// assert_eq!((int, void_ptr, proto, main), (1, 2, 3, 4));
/// let blob = btf.build();
/// assert_eq!(&blob[..2], &0xeb9f_u16.to_ne_bytes());
/// ```
#[derive(Clone, Debug)]
pub struct BtfBuilder {
    /// The type section: `struct btf_type` records and their trailing data, as u32 words.
    types: Vec<u32>,
    /// Number of types added (the id of the last one).
    count: u32,
    /// The string section, starting with the empty string.
    strings: Vec<u8>,
    /// String → offset in `strings`.
    offsets: HashMap<String, u32>,
}

impl Default for BtfBuilder {
    fn default() -> Self {
        BtfBuilder::new()
    }
}

impl BtfBuilder {
    /// An empty builder (only `void`, id 0).
    pub fn new() -> BtfBuilder {
        BtfBuilder {
            types: Vec::new(),
            count: 0,
            strings: vec![0],
            offsets: HashMap::new(),
        }
    }

    /// The offset of `name` in the string section, adding it if new; 0 for "".
    fn string(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(&offset) = self.offsets.get(name) {
            return offset;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.offsets.insert(name.to_owned(), offset);
        offset
    }

    /// Appends a `struct btf_type` and returns its id.
    fn push_type(
        &mut self,
        name_off: u32,
        kind: u32,
        vlen_or_linkage: u32,
        size_or_type: u32,
    ) -> u32 {
        self.types
            .extend_from_slice(&[name_off, (kind << 24) | vlen_or_linkage, size_or_type]);
        self.count += 1;
        self.count
    }

    /// `BTF_KIND_INT` of `size` bytes (1, 2, 4, 8 or 16) named `name`, signed or not.
    ///
    /// # Panics
    ///
    /// If `size` is 0 or larger than 16.
    pub fn int(&mut self, name: &str, size: u32, signed: bool) -> u32 {
        assert!(
            (1..=16).contains(&size),
            "BTF INT size must be 1..=16 bytes"
        );
        let name_off = self.string(name);
        let id = self.push_type(name_off, KIND_INT, 0, size);
        let encoding = if signed { INT_SIGNED } else { 0 };
        // Extra word: encoding in bits 24..28, bit offset 0 in bits 16..24, bits in 0..8.
        self.types.push((encoding << 24) | (size * 8));
        id
    }

    /// `BTF_KIND_PTR` to type `target` (0 = `void *`).
    pub fn ptr(&mut self, target: u32) -> u32 {
        self.push_type(0, KIND_PTR, 0, target)
    }

    /// `BTF_KIND_FUNC_PROTO` returning `ret` (0 = void) with named parameters.
    ///
    /// # Panics
    ///
    /// With more than 65535 parameters.
    pub fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        assert!(params.len() <= MAX_VLEN, "too many BTF parameters");
        let id = self.push_type(0, KIND_FUNC_PROTO, params.len() as u32, ret);
        for &(name, ty) in params {
            let name_off = self.string(name);
            self.types.extend_from_slice(&[name_off, ty]);
        }
        id
    }

    /// `BTF_KIND_FUNC` named `name` with prototype `proto`.
    pub fn func(&mut self, name: &str, proto: u32, linkage: FuncLinkage) -> u32 {
        let name_off = self.string(name);
        self.push_type(name_off, KIND_FUNC, linkage as u32, proto)
    }

    /// The blob: `struct btf_header` (magic, version 1, flags 0, `hdr_len` 24, type section at
    /// offset 0, string section right after it), the types, then the strings. Native byte
    /// order, as the kernel expects.
    pub fn build(&self) -> Vec<u8> {
        let type_len = (self.types.len() * 4) as u32;
        let str_len = self.strings.len() as u32;
        let mut blob = Vec::with_capacity((BTF_HEADER_LEN + type_len + str_len) as usize);
        blob.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        blob.push(BTF_VERSION);
        blob.push(0); // flags
        for word in [BTF_HEADER_LEN, 0, type_len, type_len, str_len] {
            blob.extend_from_slice(&word.to_ne_bytes());
        }
        for word in &self.types {
            blob.extend_from_slice(&word.to_ne_bytes());
        }
        blob.extend_from_slice(&self.strings);
        blob
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    /// The blob of reference/user_ringbuf_drain_btf.c, with strings in insertion order.
    #[test]
    fn callback_blob_is_byte_exact() {
        let mut btf = BtfBuilder::new();
        let int = btf.int("int", 4, true); // 1, "int" at 1
        let ptr = btf.ptr(0); // 2
        let main_proto = btf.func_proto(int, &[("a", ptr)]); // 3, "a" at 5
        let cb_proto = btf.func_proto(int, &[("a", ptr), ("a", ptr)]); // 4
        let main = btf.func("main", main_proto, FuncLinkage::Global); // 5, "main" at 7
        let cb = btf.func("cb", cb_proto, FuncLinkage::Static); // 6, "cb" at 12
        assert_eq!(
            (int, ptr, main_proto, cb_proto, main, cb),
            (1, 2, 3, 4, 5, 6)
        );

        let types = words(&[
            1,
            1 << 24,
            4,
            (1 << 24) | 32, // INT "int" size 4, signed, 32 bits
            0,
            2 << 24,
            0, // PTR -> void
            0,
            (13 << 24) | 1,
            1,
            5,
            2, // FUNC_PROTO int (a: void *)
            0,
            (13 << 24) | 2,
            1,
            5,
            2,
            5,
            2, // FUNC_PROTO int (a: void *, a: void *)
            7,
            (12 << 24) | 1,
            3, // FUNC main, global
            12,
            12 << 24,
            4, // FUNC cb, static
        ]);
        let strings = b"\0int\0a\0main\0cb\0";
        let mut expected = vec![0x9f, 0xeb, 1, 0];
        expected.extend(words(&[24, 0, types.len() as u32, types.len() as u32]));
        expected.extend(words(&[strings.len() as u32]));
        expected.extend(&types);
        expected.extend(strings);
        if cfg!(target_endian = "big") {
            expected[..2].copy_from_slice(&BTF_MAGIC.to_ne_bytes());
        }
        assert_eq!(btf.build(), expected);
    }

    #[test]
    fn empty_blob_is_header_and_empty_string() {
        let blob = BtfBuilder::new().build();
        assert_eq!(blob.len(), 24 + 1);
        assert_eq!(&blob[4..8], &24u32.to_ne_bytes());
        assert_eq!(&blob[12..16], &0u32.to_ne_bytes()); // type_len
        assert_eq!(&blob[20..24], &1u32.to_ne_bytes()); // str_len
        assert_eq!(blob[24], 0);
    }

    #[test]
    fn unsigned_int_encoding() {
        let mut btf = BtfBuilder::new();
        btf.int("u8", 1, false);
        let blob = btf.build();
        assert_eq!(
            &blob[24..],
            &[words(&[1, 1 << 24, 1, 8]), b"\0u8\0".to_vec()].concat()[..]
        );
    }
}
