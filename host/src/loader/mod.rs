//! Loader: finds plugin libraries in a folder, loads a private copy of each, and builds the
//! registry of the classes they export.
//!
//! Three pitfalls shape this code:
//! - `dlopen` of a path already loaded returns the old library, and overwriting a mapped file
//!   can crash the process: so every library is loaded from a fresh private copy. On Linux the
//!   copy is a sealed memory file, so it takes no space from `state_dir` (where the spool
//!   lives); elsewhere, or if that fails, a file in `state_dir/libs`.
//! - abi_stable's `RootModule::load_from_*` caches one module per type and would hand back the
//!   first library for every file: so each header is read with `lib_header_from_path`.
//! - A truncated library crashes `dlopen` itself: so the copy's ELF structure (PE on Windows)
//!   is checked first.
//!
//! Before any of that, [`trust`] decides whether the file may be loaded at all, and only a
//! regular file is opened (a FIFO would block the scan forever, a device could react to being
//! opened). Rescanning the folder reuses every library whose file is untouched, or rewritten
//! with the same sha256, so only new and changed files are loaded again (a loaded library is
//! never unloaded).
//!
//! Only the libraries that export a class the config names (the `wanted` classes of [`scan`])
//! are mapped into the host. New bytes are first [`inspect`]ed in a short-lived child process,
//! which finds out what they export, and whether they crash while being loaded, without
//! mapping them here; the answer is kept in the [`Registry`] (reused while the file is
//! untouched or its sha256 unchanged), so a later reload that names one of their classes
//! loads them then, without asking a child again.

#[cfg(windows)]
mod acl;
mod cache;
#[cfg(all(unix, not(target_vendor = "apple")))]
mod elf;
pub(crate) mod inspect;
#[cfg(any(windows, test))]
mod pe;
#[cfg(target_os = "linux")]
pub mod resident;
pub mod state_dir;
pub mod trust;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::RStr;
use calllogger_plugin_abi::{
    ClassInfo, ErrorKind, InstanceBox, PanicStrategy, PluginError, PluginModuleRef, ABI_VERSION,
};

/// A plugin library found in the folder: loaded into the host, or only inspected (in a child
/// process) because no configured class is its.
pub struct Library {
    /// The operator's file it was loaded from.
    pub file: PathBuf,
    /// The plugin crate's name, as the library reports it.
    pub name: String,
    /// The plugin crate's version.
    pub version: String,
    /// The SDK version the library was built with.
    pub sdk_version: String,
    /// The plugin ABI version it declares.
    pub abi_version: String,
    /// The classes it exports.
    pub classes: Vec<ClassInfo>,
    /// The sha256 of the file's bytes when it was loaded, if it was computed (see [`Hashing`]).
    pub sha256: Option<String>,
    /// Its size in bytes (what it keeps mapped once retired).
    pub size: u64,
    /// The file's identity and change times when it was read.
    fingerprint: Fingerprint,
    /// Its root module once it is loaded into the host.
    module: Option<PluginModuleRef>,
}

impl Library {
    /// Builds an instance of `class` from the YAML text of its section.
    pub fn instantiate(
        &self,
        class: &str,
        settings_yaml: &str,
    ) -> Result<InstanceBox, PluginError> {
        let Some(module) = self.module else {
            return Err(PluginError::new(
                ErrorKind::Transient,
                format!(
                    "{} was only inspected, not loaded: no configured class was its",
                    self.file.display()
                ),
            ));
        };
        (module.new_instance())(RStr::from_str(class), RStr::from_str(settings_yaml)).into_result()
    }

    /// Whether it is mapped into the host (and stays mapped: libraries are never unloaded).
    pub fn is_loaded(&self) -> bool {
        self.module.is_some()
    }

    /// Whether it exports any of the `wanted` classes.
    fn exports_any(&self, wanted: &[String]) -> bool {
        exports_any(&self.classes, wanted)
    }

    /// `name version`, as logs and `calllogger plugins` show the library.
    pub fn identity(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// A file in the plugins folder that was not loaded, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub file: PathBuf,
    pub reason: String,
    /// Set when the file was refused after it was mapped: it is not loaded again (each load
    /// stays mapped) until it changes.
    loaded: Option<Fingerprint>,
}

impl Refusal {
    /// `library`, loaded from `file`, refused for `reason` (its instances did not construct).
    pub fn after_loading(library: &Library, reason: String) -> Self {
        Self {
            file: library.file.clone(),
            reason,
            loaded: Some(library.fingerprint.clone()),
        }
    }
}

/// Why one file was not (re)loaded, and whether the version loaded before may run on.
struct Refused {
    reason: String,
    /// False when the bytes already running fail a trust check (the policy changed).
    keep_previous: bool,
    loaded: Option<Fingerprint>,
}

impl Refused {
    fn new(reason: String) -> Self {
        Self {
            reason,
            keep_previous: true,
            loaded: None,
        }
    }
}

/// Why a configured class cannot be instantiated.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error("no plugin library exports class `{class}`; available: {}", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    Unknown {
        class: String,
        available: Vec<String>,
    },
    #[error("class `{class}` is exported by more than one library: {}; remove all but one", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" and "))]
    Ambiguous { class: String, files: Vec<PathBuf> },
}

/// Why the plugins folder could not be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot read plugin folder {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Untrusted(String),
}

/// The libraries found in the plugins folder and the files refused.
#[derive(Default)]
pub struct Registry {
    pub libraries: Vec<Arc<Library>>,
    pub refused: Vec<Refusal>,
}

impl Registry {
    /// Every exported class with the libraries that export it, sorted by class name.
    pub fn classes(&self) -> BTreeMap<&str, Vec<(&Arc<Library>, &ClassInfo)>> {
        let mut classes: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for library in &self.libraries {
            for class in &library.classes {
                classes
                    .entry(class.name.as_str())
                    .or_default()
                    .push((library, class));
            }
        }
        classes
    }

    /// Class names exported by more than one library, each with its error.
    pub fn conflicts(&self) -> Vec<ClassError> {
        self.classes()
            .into_iter()
            .filter(|(_, exporters)| exporters.len() > 1)
            .map(|(class, exporters)| ClassError::Ambiguous {
                class: class.to_owned(),
                files: exporters.iter().map(|(l, _)| l.file.clone()).collect(),
            })
            .collect()
    }

    /// The library loaded from `file`, if any.
    pub fn library_at(&self, file: &Path) -> Option<&Arc<Library>> {
        self.libraries.iter().find(|l| l.file == file)
    }

    /// How many of its libraries are mapped into the host.
    pub fn loaded(&self) -> usize {
        self.libraries.iter().filter(|l| l.is_loaded()).count()
    }

    /// The one library exporting `class`.
    pub fn library_for(&self, class: &str) -> Result<&Arc<Library>, ClassError> {
        let classes = self.classes();
        match classes.get(class).map(Vec::as_slice) {
            Some([(library, _)]) => Ok(library),
            Some(exporters) => Err(ClassError::Ambiguous {
                class: class.to_owned(),
                files: exporters.iter().map(|(l, _)| l.file.clone()).collect(),
            }),
            None => Err(ClassError::Unknown {
                class: class.to_owned(),
                available: classes.keys().map(|c| c.to_string()).collect(),
            }),
        }
    }
}

/// When a library's sha256 is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// Always (for `calllogger plugins`, which lists the hashes).
    Always,
    /// When pins are set, or when rescanning (to tell a rewrite with the same bytes from a new
    /// version): not at start-up, where hashing every library costs ~1 ms per MB.
    WhenNeeded,
}

/// Finds every shared library in `dir` that `policy` trusts, each checked in a private copy (in
/// `copy_dir` where no memory file can be made): those exporting one of the `wanted` classes
/// are loaded into the host, the others only inspected in a child process. A library whose
/// file is unchanged since `previous` (untouched, or the same sha256) is reused (and loaded
/// now if it was only inspected and is wanted); a changed file that is refused leaves
/// `previous`'s library in place, with the refusal noted.
pub fn scan(
    dir: &Path,
    copy_dir: &Path,
    policy: &trust::LoaderPolicy,
    previous: &Registry,
    hashing: Hashing,
    wanted: &[String],
) -> Result<Registry, LoaderError> {
    let hash =
        hashing == Hashing::Always || !policy.pins.is_empty() || !previous.libraries.is_empty();
    // A process's first scan starts from what the last run learnt: no child for a library
    // whose file is untouched since.
    let cached;
    let from_cache = previous.libraries.is_empty() && previous.refused.is_empty();
    let previous = if from_cache {
        cached = cache::read(copy_dir);
        &cached
    } else {
        previous
    };
    let folder = std::fs::metadata(dir).map_err(|source| LoaderError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    trust::check_permissions(policy, "plugin folder", dir, &folder)
        .map_err(LoaderError::Untrusted)?;
    let entries = std::fs::read_dir(dir).map_err(|source| LoaderError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_library_name(p))
        .collect();
    files.sort();
    // The checks first, file by file; the children inspecting new bytes run side by side.
    let steps: Vec<_> = files
        .into_iter()
        .map(|file| {
            let earlier = previous.library_at(&file);
            let refused_before = previous.refused.iter().find(|r| r.file == file);
            let step = scan_one(
                &file,
                policy,
                earlier,
                refused_before,
                hash,
                copy_dir,
                wanted,
            );
            (file, earlier, step)
        })
        .collect();
    let mut registry = Registry::default();
    for (file, earlier, step) in steps {
        match step.and_then(|step| step.finish(copy_dir, policy, wanted)) {
            Ok(library) => {
                tracing::debug!(file = %file.display(), library = %library.identity(), sdk = %library.sdk_version, abi = %library.abi_version, classes = library.classes.len(), "plugin library ready");
                registry.libraries.push(library);
            }
            Err(refused) => {
                // A cached library was never running here: nothing to keep.
                if refused.keep_previous && !from_cache {
                    registry.libraries.extend(earlier.cloned());
                }
                registry.refused.push(Refusal {
                    file,
                    reason: refused.reason,
                    loaded: refused.loaded,
                });
            }
        }
    }
    cache::write(copy_dir, &registry);
    Ok(registry)
}

/// Whether `classes` holds any of the `wanted` class names.
fn exports_any(classes: &[ClassInfo], wanted: &[String]) -> bool {
    classes
        .iter()
        .any(|c| wanted.iter().any(|w| w == c.name.as_str()))
}

/// What is left to do for one file once its checks passed.
enum Step {
    /// Nothing: reused as it is.
    Ready(Arc<Library>),
    /// Bytes inspected before, now wanted: load them into the host.
    Load {
        known: Arc<Library>,
        data: Vec<u8>,
        sha256: Option<String>,
        fingerprint: Fingerprint,
    },
    /// New bytes, being inspected in a child process.
    Inspect(Box<Pending>),
}

/// A library being inspected in a child process.
struct Pending {
    file: PathBuf,
    copy: PrivateCopy,
    inspection: inspect::Inspection,
    sha256: Option<String>,
    pin: trust::Pin,
    fingerprint: Fingerprint,
    size: u64,
}

impl Step {
    /// Waits for the inspection, if any, and loads the library into the host if it exports a
    /// `wanted` class.
    fn finish(
        self,
        copy_dir: &Path,
        policy: &trust::LoaderPolicy,
        wanted: &[String],
    ) -> Result<Arc<Library>, Refused> {
        let after_loading = |fingerprint: &Fingerprint| {
            let loaded = Some(fingerprint.clone());
            move |reason| Refused {
                loaded,
                ..Refused::new(reason)
            }
        };
        match self {
            Step::Ready(library) => Ok(library),
            Step::Load {
                known,
                data,
                sha256,
                fingerprint,
            } => {
                let refused = after_loading(&fingerprint);
                load(&known.file, &data, sha256, fingerprint, copy_dir, policy)
                    .map(Arc::new)
                    .map_err(refused)
            }
            Step::Inspect(pending) => {
                let Pending {
                    file,
                    copy,
                    inspection,
                    sha256,
                    pin,
                    fingerprint,
                    size,
                } = *pending;
                // A class pin is checked once the classes are known; a retry after a SIGHUP
                // is allowed.
                let inspected = inspection
                    .finish()
                    .map_err(|reason| {
                        after_loading(&fingerprint)(describe_copy(&reason, &copy.path, &file))
                    })
                    .and_then(|exports| {
                        trust::check_classes(&pin, exports.classes.iter().map(|c| c.name.as_str()))
                            .map_err(Refused::new)?;
                        Ok(exports)
                    });
                let exports = match inspected {
                    Ok(exports) => exports,
                    Err(refused) => {
                        copy.discard();
                        return Err(refused);
                    }
                };
                let (exports, module) = if exports_any(&exports.classes, wanted) {
                    let opened = open_copy(&copy.path, &file);
                    copy.loaded();
                    let (exports, module) = opened.map_err(after_loading(&fingerprint))?;
                    (exports, Some(module))
                } else {
                    // Its memory (or file) copy goes: nothing of it stays in the host.
                    copy.discard();
                    (exports, None)
                };
                Ok(Arc::new(Library::new(
                    file,
                    exports,
                    sha256,
                    size,
                    fingerprint,
                    module,
                )))
            }
        }
    }
}

/// Checks one file, and reuses `earlier` (its library from the previous scan), or says what
/// is left to load or inspect.
fn scan_one(
    file: &Path,
    policy: &trust::LoaderPolicy,
    earlier: Option<&Arc<Library>>,
    refused_before: Option<&Refusal>,
    hash: bool,
    copy_dir: &Path,
    wanted: &[String],
) -> Result<Step, Refused> {
    let cannot_read = |e: std::io::Error| Refused::new(format!("cannot read: {e}"));
    // Only a regular file is opened; the open cannot block, and the check is repeated on the
    // opened handle in case the name was swapped in between.
    regular_file(&std::fs::metadata(file).map_err(cannot_read)?).map_err(Refused::new)?;
    let handle = open_nonblocking(file).map_err(cannot_read)?;
    let meta = handle.metadata().map_err(cannot_read)?;
    regular_file(&meta).map_err(Refused::new)?;
    let fingerprint = Fingerprint::of(&meta);
    // Untouched since it was loaded (a write or chmod changes the ctime): the same bytes.
    let untouched = earlier.filter(|l| l.fingerprint == fingerprint);
    // New bytes that fail a check leave the old version running; the running bytes failing a
    // check (the policy changed on SIGHUP) stop.
    let refuse = |reason: String| Refused {
        keep_previous: untouched.is_none(),
        ..Refused::new(reason)
    };
    // The checks run on the open handle: the file checked is the file read.
    trust::check_permissions(policy, "plugin library", file, &meta).map_err(refuse)?;
    // Reused as it is unless it is wanted now and was only inspected (then its bytes are read).
    let as_is = |same: &Arc<Library>| same.is_loaded() || !same.exports_any(wanted);
    if let Some(same) = untouched.filter(|same| as_is(same)) {
        if policy.pins.is_empty() {
            return Ok(Step::Ready(same.clone()));
        }
        if let Some(sha256) = &same.sha256 {
            let pin = trust::check_pin(policy, &file_name(file), sha256).map_err(refuse)?;
            trust::check_classes(&pin, same.classes.iter().map(|c| c.name.as_str()))
                .map_err(refuse)?;
            return Ok(Step::Ready(same.clone()));
        }
    }
    if let Some(before) = refused_before.filter(|r| r.loaded.as_ref() == Some(&fingerprint)) {
        return Err(Refused {
            loaded: before.loaded.clone(),
            ..Refused::new(before.reason.clone())
        });
    }
    let data = read_all(handle, &fingerprint).map_err(Refused::new)?;
    let sha256 = hash.then(|| trust::sha256_hex(&data));
    let pin = match &sha256 {
        Some(sha256) => trust::check_pin(policy, &file_name(file), sha256).map_err(refuse)?,
        None => trust::Pin::Unpinned,
    };
    let reusable = untouched.or(earlier.filter(|l| l.sha256.is_some() && l.sha256 == sha256));
    if let Some(same) = reusable {
        trust::check_classes(&pin, same.classes.iter().map(|c| c.name.as_str())).map_err(refuse)?;
        if as_is(same) {
            return Ok(Step::Ready(same.clone()));
        }
        return Ok(Step::Load {
            known: same.clone(),
            data,
            sha256,
            fingerprint,
        });
    }
    let size = data.len() as u64;
    tracing::debug!(file = %file.display(), "inspecting the library in a child process");
    let inspecting = check_and_copy(file, &data, copy_dir, policy).and_then(|copy| {
        match inspect::start(&copy.path, copy.descriptor()) {
            Ok(inspection) => Ok((copy, inspection)),
            Err(reason) => {
                copy.discard();
                Err(reason)
            }
        }
    });
    let (copy, inspection) = inspecting.map_err(|reason| Refused {
        loaded: Some(fingerprint.clone()),
        ..Refused::new(reason)
    })?;
    Ok(Step::Inspect(Box::new(Pending {
        file: file.to_owned(),
        copy,
        inspection,
        sha256,
        pin,
        fingerprint,
        size,
    })))
}

/// Whether a folder entry's name is a plugin library's: the platform's library extension, and
/// not a hidden file (editors and copy tools write those while a file is on its way in).
pub fn is_library_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
        && path
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}

/// A file's identity and change times: equal fingerprints mean untouched contents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed_ns: i64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        #[cfg(unix)]
        let (device, inode, changed_ns) = (
            meta.dev(),
            meta.ino(),
            meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        );
        #[cfg(not(unix))]
        let (device, inode, changed_ns) = (0, 0, 0);
        Self {
            device,
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
            changed_ns,
        }
    }
}

fn read_all(mut handle: std::fs::File, fingerprint: &Fingerprint) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(fingerprint.len as usize);
    handle
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(data)
}

fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes private copies left behind by host processes that are gone (a copy file is removed
/// once it is loaded, or on Windows, which keeps a loaded DLL's file, when the host exits; so
/// only a crash leaves one). Called at start-up, before this process has made any: a copy
/// named with this process's id was left by an earlier one that had the same id, which
/// Windows hands out again soon (and a reboot may). Returns how many.
pub fn clean_stale_copies(copy_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(copy_dir) else {
        return 0;
    };
    let own = std::process::id() as i32;
    let mut removed = 0;
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        // Copies are named `<stem>.<pid>.<n>.<ext>`.
        let pid = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit('.').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let stale = pid.is_some_and(|pid| pid == own || !process_alive(pid));
        if stale && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(unix)]
fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// Windows cannot remove a DLL file a live process has loaded: trying is the check.
#[cfg(not(unix))]
fn process_alive(_pid: i32) -> bool {
    false
}

/// Creates `dir` (and any missing parent) readable and writable by the owner alone.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Refuses anything but a regular file (after symlinks): a FIFO, a socket, a device, a folder.
fn regular_file(meta: &std::fs::Metadata) -> Result<(), String> {
    if meta.is_file() {
        return Ok(());
    }
    #[cfg(unix)]
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    let what = match () {
        () if kind.is_dir() => "a folder",
        #[cfg(unix)]
        () if kind.is_fifo() => "a FIFO",
        #[cfg(unix)]
        () if kind.is_socket() => "a socket",
        #[cfg(unix)]
        () if kind.is_char_device() || kind.is_block_device() => "a device",
        () => "something else",
    };
    Err(format!(
        "skipped without opening it: {what}, not a regular file"
    ))
}

/// Opens `file` for reading without blocking (a FIFO swapped in after the check opens at once).
fn open_nonblocking(file: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        nix::fcntl::OFlag::O_NONBLOCK.bits(),
    );
    options.open(file)
}

/// Writes a fresh owner-only file; fails if anything (a file, a symlink) is at `path` already.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(data)
}

/// A name no other copy in this or any other process has used.
fn private_copy_path(file: &Path, copy_dir: &Path) -> PathBuf {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let stem = file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    copy_dir.join(format!(
        "{stem}.{}.{n}.{}",
        std::process::id(),
        std::env::consts::DLL_EXTENSION
    ))
}

/// The private copy of a library's checked bytes that `dlopen` maps.
struct PrivateCopy {
    /// What `dlopen` is given.
    path: PathBuf,
    /// The sealed memory file behind `path` (`/proc/self/fd/N`); `None` for a file copy.
    #[cfg(target_os = "linux")]
    memory: Option<std::os::fd::OwnedFd>,
}

impl PrivateCopy {
    /// Copies `data`, the bytes of `file`, into a memory file, or else into `copy_dir`.
    fn new(
        file: &Path,
        data: &[u8],
        copy_dir: &Path,
        policy: &trust::LoaderPolicy,
    ) -> Result<Self, String> {
        #[cfg(target_os = "linux")]
        match memory_copy(file, data) {
            Ok((fd, path)) => {
                return Ok(Self {
                    path,
                    memory: Some(fd),
                })
            }
            Err(e) => tracing::warn!(
                file = %file.display(),
                "cannot make an in-memory copy ({e}); loading from a copy in {} instead",
                copy_dir.display()
            ),
        }
        let copies = create_private_dir(copy_dir)
            .and_then(|()| std::fs::metadata(copy_dir))
            .map_err(|e| {
                format!(
                    "cannot create the folder for private library copies {}: {e}",
                    copy_dir.display()
                )
            })?;
        // The copies are what gets loaded: their folder needs the same protection.
        trust::check_permissions(policy, "private copy folder", copy_dir, &copies)?;
        let path = private_copy_path(file, copy_dir);
        write_new(&path, data).map_err(|e| format!("cannot copy to {}: {e}", path.display()))?;
        Ok(Self {
            path,
            #[cfg(target_os = "linux")]
            memory: None,
        })
    }

    /// The memory file's descriptor, which a child process inherits to load it by the same
    /// path; `None` for a file copy.
    fn descriptor(&self) -> Option<i32> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.memory {
            use std::os::fd::AsRawFd as _;
            return Some(fd.as_raw_fd());
        }
        None
    }

    /// Called when the copy was only inspected by a child process: it is not needed any more
    /// (a memory file is freed when its descriptor closes).
    fn discard(self) {
        #[cfg(target_os = "linux")]
        if self.memory.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Called once `dlopen` has mapped (or refused) the copy.
    fn loaded(self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = self.memory {
            // Never closed: glibc's `dlopen` looks a path up among the loaded objects by its
            // name first, so were `/proc/self/fd/N` reused for a later library it would hand
            // back this one. Libraries are never unloaded (and one that failed may stay loaded
            // too), so keeping every memory file open keeps every name unique; the memory is
            // the mapping's own.
            std::mem::forget(fd);
            return;
        }
        // The library stays mapped after this; a file copy is no longer needed on disk.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `data` in a new memory file (`memfd_create`), sealed against any change so the bytes the
/// checks saw are the bytes `dlopen` maps; returns it with the path to load it by.
#[cfg(target_os = "linux")]
fn memory_copy(file: &Path, data: &[u8]) -> std::io::Result<(std::os::fd::OwnedFd, PathBuf)> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};

    // Shown in /proc/PID/maps as `/memfd:calllogger:<file name> (deleted)`; at most 249 bytes.
    let mut name = format!("calllogger:{}", file_name(file));
    while name.len() > 200 {
        name.pop();
    }
    let fd = memfd_create(
        name.as_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut memory = std::fs::File::from(fd);
    memory.write_all(data)?;
    fcntl(
        &memory,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", memory.as_raw_fd()));
    // Without /proc (some sandboxes) there is no path to load it by.
    std::fs::metadata(&path)?;
    Ok((memory.into(), path))
}

/// What a library says about itself once loaded.
#[derive(Debug)]
struct Exports {
    name: String,
    version: String,
    sdk_version: String,
    abi_version: String,
    classes: Vec<ClassInfo>,
}

impl Library {
    fn new(
        file: PathBuf,
        exports: Exports,
        sha256: Option<String>,
        size: u64,
        fingerprint: Fingerprint,
        module: Option<PluginModuleRef>,
    ) -> Self {
        Self {
            file,
            name: exports.name,
            version: exports.version,
            sdk_version: exports.sdk_version,
            abi_version: exports.abi_version,
            classes: exports.classes,
            sha256,
            size,
            fingerprint,
            module,
        }
    }
}

/// Checks `data`, the bytes of `file`, and copies them to a private copy to load.
fn check_and_copy(
    file: &Path,
    data: &[u8],
    copy_dir: &Path,
    policy: &trust::LoaderPolicy,
) -> Result<PrivateCopy, String> {
    #[cfg(all(unix, not(target_vendor = "apple")))]
    elf::check(data)?;
    #[cfg(windows)]
    pe::check(data)?;
    PrivateCopy::new(file, data, copy_dir, policy)
}

/// Loads one library into the host from a private copy of `data`, the bytes of `file`; the
/// error is the reason it was refused.
fn load(
    file: &Path,
    data: &[u8],
    sha256: Option<String>,
    fingerprint: Fingerprint,
    copy_dir: &Path,
    policy: &trust::LoaderPolicy,
) -> Result<Library, String> {
    let copy = check_and_copy(file, data, copy_dir, policy)?;
    let opened = open_copy(&copy.path, file);
    copy.loaded();
    let (exports, module) = opened?;
    let size = data.len() as u64;
    Ok(Library::new(
        file.to_owned(),
        exports,
        sha256,
        size,
        fingerprint,
        Some(module),
    ))
}

/// `dlopen`s the checked private copy at `copy` (of `file`), checks its root module and reads
/// what it exports; the error is the reason it is refused. The host's loader and the
/// inspecting child process both load through here.
fn open_copy(copy: &Path, file: &Path) -> Result<(Exports, PluginModuleRef), String> {
    let header = lib_header_from_path(copy).map_err(|e| describe(&e, copy, file))?;
    let abi_version = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| describe(&e, copy, file))?;
    if module.panic_strategy() == PanicStrategy::Abort {
        return Err("built with panic = \"abort\": its first panic would kill the host; rebuild it with panic = \"unwind\"".into());
    }
    let classes = (module.classes())().into_vec();
    if classes.is_empty() {
        return Err("exports no plugin classes".into());
    }
    let info = (module.library())();
    let exports = Exports {
        name: info.name.into_string(),
        version: info.version.into_string(),
        sdk_version: info.sdk_version.into_string(),
        abi_version,
        classes,
    };
    Ok((exports, module))
}

/// A short reason for a load error, naming the operator's file rather than the private copy.
fn describe(error: &LibraryError, copy: &Path, file: &Path) -> String {
    let text = match error {
        LibraryError::OpenError { err, .. } => format!("cannot be loaded: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not a calllogger plugin (it has no plugin root module)".to_owned()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            let (theirs, ours) = (minor(&actual_version.to_string()), minor(ABI_VERSION));
            format!(
                "built against calllogger plugin interface {actual_version} (SDK {theirs}), but \
                 this host speaks interface {ours} (SDK {ours}.x): rebuild it against \
                 calllogger-plugin-sdk {ours}"
            )
        }
        LibraryError::AbiInstability(err) => {
            let report = err.to_string();
            tracing::debug!(file = %file.display(), "abi_stable layout report:\n{report}");
            format!(
                "incompatible plugin interface (its types differ from this host's interface {ABI_VERSION}; rebuild it against calllogger-plugin-sdk {}): {}",
                minor(ABI_VERSION),
                layout_errors(&report)
            )
        }
        LibraryError::Many(errors) => errors
            .iter()
            .map(|e| describe(e, copy, file))
            .collect::<Vec<_>>()
            .join("; "),
        other => other
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    describe_copy(&text, copy, file)
}

/// `reason`, naming the operator's `file` where it names the private `copy`.
fn describe_copy(reason: &str, copy: &Path, file: &Path) -> String {
    reason.replace(&copy.display().to_string(), &file.display().to_string())
}

/// The `Error:` lines of abi_stable's layout report (which runs to ~1,400 lines), each with
/// the expected and found values that follow it: `Error:mismatched package (expected: a; found: b)`.
fn layout_errors(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let mut errors = Vec::new();
    for (i, line) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("Error:"))
    {
        let mut error = (*line).to_owned();
        let detail: Vec<String> = ["Expected:", "Found:"]
            .iter()
            .filter_map(|label| {
                let at = lines[i + 1..].iter().take(6).position(|l| l == label)?;
                let value = lines.get(i + 2 + at).filter(|v| !v.is_empty())?;
                Some(format!("{} {value}", label.to_lowercase()))
            })
            .collect();
        if !detail.is_empty() {
            error.push_str(&format!(" ({})", detail.join("; ")));
        }
        errors.push(error);
        if errors.len() == 4 {
            break;
        }
    }
    if errors.is_empty() {
        "layout mismatch".to_owned()
    } else {
        errors.join("; ")
    }
}

/// The compatible part of an interface version, in words: abi_stable's rule is same minor
/// while 0.x (`0.3`), same major from 1.0 on (`1`).
fn minor(version: &str) -> String {
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap_or("0"), parts.next().unwrap_or("0"));
    if major == "0" {
        format!("{major}.{minor}")
    } else {
        major.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_named_with_this_process_id_is_stale_at_start_up_one_of_a_live_process_is_not() {
        let dir = tempfile::tempdir().unwrap();
        // Left by an earlier process that had this one's id (Windows reuses ids soon).
        let own = dir.path().join(format!("libx.{}.0.so", std::process::id()));
        // Pid 1 is alive for as long as the system runs.
        let live = dir.path().join("libx.1.0.so");
        std::fs::write(&own, b"left behind").unwrap();
        std::fs::write(&live, b"loaded").unwrap();
        assert_eq!(clean_stale_copies(dir.path()), 1);
        assert!(!own.exists() && live.exists());
    }
}
