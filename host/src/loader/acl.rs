//! Windows' side of the trust check: who may write a file or folder, read from its security
//! descriptor. Trusted are SYSTEM, the Administrators group, TrustedInstaller and the host's
//! own user; anyone else granted write access (or owning it, since an owner may change its
//! access) could run code as the service. Denying entries are not subtracted: a grant counts
//! even where a denial for some of its members comes before it (stricter than Windows).

use std::os::windows::ffi::OsStrExt as _;
use std::path::Path;

use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetNamedSecurityInfoW, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    AclSizeInformation, GetAce, GetAclInformation, GetTokenInformation, LookupAccountSidW,
    TokenUser, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_SIZE_INFORMATION,
    DACL_SECURITY_INFORMATION, INHERIT_ONLY_ACE, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    PSID, SID_NAME_USE, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::SystemServices::ACCESS_ALLOWED_ACE_TYPE;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// SYSTEM, Administrators, TrustedInstaller, and CREATOR OWNER (which stands for whoever
/// creates a file inside, and grants nobody else anything).
const TRUSTED: [&str; 4] = [
    "S-1-5-18",
    "S-1-5-32-544",
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
    "S-1-3-0",
];

/// Access that changes a file, a folder's entries, or who may: write or append data (add a
/// file or folder), delete a child, delete, change the access list or the owner, generic
/// write or all.
const WRITE: u32 = 0x2 | 0x4 | 0x40 | 0x1_0000 | 0x4_0000 | 0x8_0000 | 0x4000_0000 | 0x1000_0000;

/// An account, as the fix names it (`*SID` for `icacls`) and as a person reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub sid: String,
    pub name: String,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            f.write_str(&self.sid)
        } else {
            write!(f, "{} ({})", self.name, self.sid)
        }
    }
}

/// Who, beyond the trusted, may change `path`.
#[derive(Debug, Default)]
pub struct Untrusted {
    /// Its owner, if not trusted.
    pub owner: Option<Account>,
    /// Those granted write access; `None` inside if it has no access list at all (anyone may).
    pub writers: Vec<Option<Account>>,
}

/// Reads `path`'s owner and access list and returns who untrusted may change it.
pub fn untrusted(path: &Path) -> std::io::Result<Untrusted> {
    let me = token_user()?;
    let trusted = |sid: &str| TRUSTED.contains(&sid) || sid == me;
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut owner: PSID = std::ptr::null_mut();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated; the out-pointers are valid; the owner and the list
    // point into `descriptor`, which is freed below, after they are last read.
    let status = unsafe {
        GetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    if status != 0 {
        return Err(std::io::Error::from_raw_os_error(status as i32));
    }
    let result = (|| {
        let mut found = Untrusted::default();
        let owner = account(owner)?;
        if !trusted(&owner.sid) {
            found.owner = Some(owner);
        }
        if dacl.is_null() {
            found.writers.push(None);
            return Ok(found);
        }
        for sid in writers(dacl)? {
            let writer = account(sid)?;
            if !trusted(&writer.sid) && !found.writers.contains(&Some(writer.clone())) {
                found.writers.push(Some(writer));
            }
        }
        Ok(found)
    })();
    // SAFETY: `descriptor` was allocated by GetNamedSecurityInfoW for the caller to free.
    unsafe { LocalFree(descriptor) };
    result
}

/// The accounts an access list's allowing entries grant write access (entries only inherited
/// by what is inside are skipped).
fn writers(dacl: *mut ACL) -> std::io::Result<Vec<PSID>> {
    let mut size = ACL_SIZE_INFORMATION {
        AceCount: 0,
        AclBytesInUse: 0,
        AclBytesFree: 0,
    };
    // SAFETY: `dacl` is a valid list from the descriptor; `size` is the class's struct.
    let ok = unsafe {
        GetAclInformation(
            dacl,
            (&raw mut size).cast(),
            size_of::<ACL_SIZE_INFORMATION>() as u32,
            AclSizeInformation,
        )
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut sids = Vec::new();
    for index in 0..size.AceCount {
        let mut ace: *mut core::ffi::c_void = std::ptr::null_mut();
        // SAFETY: `index` is below the list's count; `ace` receives a pointer into the list.
        if unsafe { GetAce(dacl, index, &mut ace) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: every entry starts with its header.
        let header = unsafe { &*ace.cast::<ACE_HEADER>() };
        if u32::from(header.AceType) != ACCESS_ALLOWED_ACE_TYPE
            || u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0
        {
            continue;
        }
        // SAFETY: an access-allowed entry is an ACCESS_ALLOWED_ACE, its SID at `SidStart`.
        let allowed = unsafe { &mut *ace.cast::<ACCESS_ALLOWED_ACE>() };
        if allowed.Mask & WRITE != 0 {
            sids.push((&raw mut allowed.SidStart).cast());
        }
    }
    Ok(sids)
}

/// The SID as a string, and its account's name if it has one.
fn account(sid: PSID) -> std::io::Result<Account> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` points into a live descriptor or token buffer; `text` receives a string
    // the caller frees.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `text` is a NUL-terminated string from ConvertSidToStringSidW.
    let sid_text = unsafe { wide_string(text) };
    // SAFETY: allocated by ConvertSidToStringSidW for the caller to free.
    unsafe { LocalFree(text.cast()) };
    Ok(Account {
        sid: sid_text,
        name: name_of(sid),
    })
}

/// `DOMAIN\name` of a SID, empty if it has none.
fn name_of(sid: PSID) -> String {
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: the buffers and their lengths match; `sid` is valid.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return String::new();
    }
    let name = String::from_utf16_lossy(&name[..name_len as usize]);
    let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
    if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    }
}

/// The SID of the user this process runs as.
fn token_user() -> std::io::Result<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the current process's pseudo-handle; `token` receives a handle closed below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A TOKEN_USER and the SID after it, aligned for the struct's pointer.
    let mut buffer = [0u64; 64];
    let mut used = 0;
    // SAFETY: `buffer` is writable for its size in bytes; `token` is open for query.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buffer.as_mut_ptr().cast(),
            size_of_val(&buffer) as u32,
            &mut used,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: opened above, closed once.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(error);
    }
    // SAFETY: GetTokenInformation filled the buffer with a TOKEN_USER.
    let user = unsafe { &*buffer.as_ptr().cast::<TOKEN_USER>() };
    Ok(account(user.User.Sid)?.sid)
}

/// A NUL-terminated UTF-16 string.
///
/// # Safety
/// `text` must point to a NUL-terminated UTF-16 string.
unsafe fn wide_string(text: *const u16) -> String {
    let mut len = 0;
    // SAFETY: the caller promises a terminating NUL.
    while unsafe { *text.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` units before the NUL are part of the string.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) })
}
