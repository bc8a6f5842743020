//! The `bpf(2)` commands (`enum bpf_cmd` in `include/uapi/linux/bpf.h`).

use core::fmt;

/// A `bpf(2)` command: the first argument of the system call (`enum bpf_cmd`).
///
/// Its [`Display`](fmt::Display) form is the uapi name, e.g. `BPF_MAP_CREATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Command {
    /// `BPF_MAP_CREATE`.
    MapCreate = 0,
    /// `BPF_MAP_LOOKUP_ELEM`.
    MapLookupElem = 1,
    /// `BPF_MAP_UPDATE_ELEM`.
    MapUpdateElem = 2,
    /// `BPF_MAP_DELETE_ELEM`.
    MapDeleteElem = 3,
    /// `BPF_MAP_GET_NEXT_KEY`.
    MapGetNextKey = 4,
    /// `BPF_PROG_LOAD`.
    ProgLoad = 5,
    /// `BPF_OBJ_PIN`.
    ObjPin = 6,
    /// `BPF_OBJ_GET`.
    ObjGet = 7,
    /// `BPF_PROG_ATTACH`.
    ProgAttach = 8,
    /// `BPF_PROG_DETACH`.
    ProgDetach = 9,
    /// `BPF_PROG_TEST_RUN`.
    ProgTestRun = 10,
    /// `BPF_PROG_GET_NEXT_ID`.
    ProgGetNextId = 11,
    /// `BPF_MAP_GET_NEXT_ID`.
    MapGetNextId = 12,
    /// `BPF_PROG_GET_FD_BY_ID`.
    ProgGetFdById = 13,
    /// `BPF_MAP_GET_FD_BY_ID`.
    MapGetFdById = 14,
    /// `BPF_OBJ_GET_INFO_BY_FD`.
    ObjGetInfoByFd = 15,
    /// `BPF_PROG_QUERY`.
    ProgQuery = 16,
    /// `BPF_RAW_TRACEPOINT_OPEN`.
    RawTracepointOpen = 17,
    /// `BPF_BTF_LOAD`.
    BtfLoad = 18,
    /// `BPF_BTF_GET_FD_BY_ID`.
    BtfGetFdById = 19,
    /// `BPF_TASK_FD_QUERY`.
    TaskFdQuery = 20,
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`.
    MapLookupAndDeleteElem = 21,
    /// `BPF_MAP_FREEZE`.
    MapFreeze = 22,
    /// `BPF_BTF_GET_NEXT_ID`.
    BtfGetNextId = 23,
    /// `BPF_MAP_LOOKUP_BATCH`.
    MapLookupBatch = 24,
    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`.
    MapLookupAndDeleteBatch = 25,
    /// `BPF_MAP_UPDATE_BATCH`.
    MapUpdateBatch = 26,
    /// `BPF_MAP_DELETE_BATCH`.
    MapDeleteBatch = 27,
    /// `BPF_LINK_CREATE`.
    LinkCreate = 28,
    /// `BPF_LINK_UPDATE`.
    LinkUpdate = 29,
    /// `BPF_LINK_GET_FD_BY_ID`.
    LinkGetFdById = 30,
    /// `BPF_LINK_GET_NEXT_ID`.
    LinkGetNextId = 31,
    /// `BPF_ENABLE_STATS`.
    EnableStats = 32,
    /// `BPF_ITER_CREATE`.
    IterCreate = 33,
    /// `BPF_LINK_DETACH`.
    LinkDetach = 34,
    /// `BPF_PROG_BIND_MAP`.
    ProgBindMap = 35,
    /// `BPF_TOKEN_CREATE`.
    TokenCreate = 36,
    /// `BPF_PROG_STREAM_READ_BY_FD`.
    ProgStreamReadByFd = 37,
    /// `BPF_PROG_ASSOC_STRUCT_OPS`.
    ProgAssocStructOps = 38,
}

impl Command {
    /// The uapi name of the command, e.g. `"BPF_MAP_CREATE"`.
    pub const fn name(self) -> &'static str {
        match self {
            Command::MapCreate => "BPF_MAP_CREATE",
            Command::MapLookupElem => "BPF_MAP_LOOKUP_ELEM",
            Command::MapUpdateElem => "BPF_MAP_UPDATE_ELEM",
            Command::MapDeleteElem => "BPF_MAP_DELETE_ELEM",
            Command::MapGetNextKey => "BPF_MAP_GET_NEXT_KEY",
            Command::ProgLoad => "BPF_PROG_LOAD",
            Command::ObjPin => "BPF_OBJ_PIN",
            Command::ObjGet => "BPF_OBJ_GET",
            Command::ProgAttach => "BPF_PROG_ATTACH",
            Command::ProgDetach => "BPF_PROG_DETACH",
            Command::ProgTestRun => "BPF_PROG_TEST_RUN",
            Command::ProgGetNextId => "BPF_PROG_GET_NEXT_ID",
            Command::MapGetNextId => "BPF_MAP_GET_NEXT_ID",
            Command::ProgGetFdById => "BPF_PROG_GET_FD_BY_ID",
            Command::MapGetFdById => "BPF_MAP_GET_FD_BY_ID",
            Command::ObjGetInfoByFd => "BPF_OBJ_GET_INFO_BY_FD",
            Command::ProgQuery => "BPF_PROG_QUERY",
            Command::RawTracepointOpen => "BPF_RAW_TRACEPOINT_OPEN",
            Command::BtfLoad => "BPF_BTF_LOAD",
            Command::BtfGetFdById => "BPF_BTF_GET_FD_BY_ID",
            Command::TaskFdQuery => "BPF_TASK_FD_QUERY",
            Command::MapLookupAndDeleteElem => "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
            Command::MapFreeze => "BPF_MAP_FREEZE",
            Command::BtfGetNextId => "BPF_BTF_GET_NEXT_ID",
            Command::MapLookupBatch => "BPF_MAP_LOOKUP_BATCH",
            Command::MapLookupAndDeleteBatch => "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
            Command::MapUpdateBatch => "BPF_MAP_UPDATE_BATCH",
            Command::MapDeleteBatch => "BPF_MAP_DELETE_BATCH",
            Command::LinkCreate => "BPF_LINK_CREATE",
            Command::LinkUpdate => "BPF_LINK_UPDATE",
            Command::LinkGetFdById => "BPF_LINK_GET_FD_BY_ID",
            Command::LinkGetNextId => "BPF_LINK_GET_NEXT_ID",
            Command::EnableStats => "BPF_ENABLE_STATS",
            Command::IterCreate => "BPF_ITER_CREATE",
            Command::LinkDetach => "BPF_LINK_DETACH",
            Command::ProgBindMap => "BPF_PROG_BIND_MAP",
            Command::TokenCreate => "BPF_TOKEN_CREATE",
            Command::ProgStreamReadByFd => "BPF_PROG_STREAM_READ_BY_FD",
            Command::ProgAssocStructOps => "BPF_PROG_ASSOC_STRUCT_OPS",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn values_and_names_match_uapi() {
        assert_eq!(Command::MapCreate as u32, 0);
        assert_eq!(Command::ProgLoad as u32, 5);
        assert_eq!(Command::ObjPin as u32, 6);
        assert_eq!(Command::ObjGet as u32, 7);
        assert_eq!(Command::ProgTestRun as u32, 10);
        assert_eq!(Command::MapGetFdById as u32, 14);
        assert_eq!(Command::ObjGetInfoByFd as u32, 15);
        assert_eq!(Command::BtfLoad as u32, 18);
        assert_eq!(Command::ProgBindMap as u32, 35);
        assert_eq!(Command::ProgAssocStructOps as u32, 38);
        assert_eq!(Command::MapCreate.to_string(), "BPF_MAP_CREATE");
        assert_eq!(
            Command::ObjGetInfoByFd.to_string(),
            "BPF_OBJ_GET_INFO_BY_FD"
        );
    }
}
