//! Loader: finds plugin libraries in a folder, loads a private copy of each, and builds the
//! registry of the classes they export.
//!
//! Three pitfalls shape this code (see the project's FACTS.md):
//! - `dlopen` of a path already loaded returns the old library, and overwriting a mapped file
//!   can crash the process: so every library is loaded from a fresh private copy.
//! - abi_stable's `RootModule::load_from_*` caches one module per type and would hand back the
//!   first library for every file: so each header is read with `lib_header_from_path`.
//! - A truncated library crashes `dlopen` itself: so the copy's ELF structure is checked first.

#[cfg(all(unix, not(target_vendor = "apple")))]
mod elf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::RStr;
use calllogger_plugin_sdk::ffi::{
    ClassInfo, InstanceBox, PanicStrategy, PluginModuleRef, SDK_VERSION,
};

/// A loaded plugin library.
pub struct Library {
    /// The operator's file it was loaded from.
    pub file: PathBuf,
    /// The SDK version the library was built against.
    pub sdk_version: String,
    /// The classes it exports.
    pub classes: Vec<ClassInfo>,
    module: PluginModuleRef,
}

impl Library {
    /// Builds an instance of `class` from the YAML text of its section.
    pub fn instantiate(&self, class: &str, settings_yaml: &str) -> Result<InstanceBox, String> {
        (self.module.new_instance())(RStr::from_str(class), RStr::from_str(settings_yaml))
            .into_result()
            .map_err(|e| e.into_string())
    }
}

/// A file in the plugins folder that was not loaded, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub file: PathBuf,
    pub reason: String,
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
    #[error("cannot create the folder for private library copies {dir}: {source}")]
    CopyDir {
        dir: PathBuf,
        source: std::io::Error,
    },
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

/// Loads every shared library in `dir`, copying each into `copy_dir` first.
pub fn scan(dir: &Path, copy_dir: &Path) -> Result<Registry, LoaderError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoaderError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    create_private_dir(copy_dir).map_err(|source| LoaderError::CopyDir {
        dir: copy_dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    let mut registry = Registry::default();
    for file in files {
        match load(&file, copy_dir) {
            Ok(library) => {
                tracing::debug!(file = %file.display(), sdk = %library.sdk_version, classes = library.classes.len(), "loaded plugin library");
                registry.libraries.push(Arc::new(library));
            }
            Err(reason) => registry.refused.push(Refusal { file, reason }),
        }
    }
    Ok(registry)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
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

/// Loads one library from a private copy of `file`; the error is the reason it was refused.
pub fn load(file: &Path, copy_dir: &Path) -> Result<Library, String> {
    let data = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    #[cfg(all(unix, not(target_vendor = "apple")))]
    elf::check(&data)?;
    let copy = private_copy_path(file, copy_dir);
    std::fs::write(&copy, &data).map_err(|e| format!("cannot copy to {}: {e}", copy.display()))?;
    let header = lib_header_from_path(&copy);
    // The library stays mapped after this; its private copy is no longer needed on disk.
    let _ = std::fs::remove_file(&copy);
    let header = header.map_err(|e| describe(&e, &copy, file))?;
    let sdk_version = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| describe(&e, &copy, file))?;
    if module.panic_strategy() == PanicStrategy::Abort {
        return Err("built with panic = \"abort\": its first panic would kill the host; rebuild it with panic = \"unwind\"".into());
    }
    let classes = (module.classes())().into_vec();
    if classes.is_empty() {
        return Err("exports no plugin classes".into());
    }
    Ok(Library {
        file: file.to_owned(),
        sdk_version,
        classes,
        module,
    })
}

/// A short reason for a load error, naming the operator's file rather than the private copy.
fn describe(error: &LibraryError, copy: &Path, file: &Path) -> String {
    let text = match error {
        LibraryError::OpenError { err, .. } => format!("cannot be loaded: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not a calllogger plugin (it has no plugin root module)".to_owned()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "built against plugin SDK {actual_version}, but this host speaks SDK {SDK_VERSION} \
             and accepts {}; rebuild the plugin against a compatible SDK",
            compatible_range()
        ),
        LibraryError::AbiInstability(err) => {
            let report = err.to_string();
            tracing::debug!(file = %file.display(), "abi_stable layout report:\n{report}");
            format!(
                "incompatible plugin interface (its types differ from this host's SDK {SDK_VERSION}; rebuild it): {}",
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
    text.replace(&copy.display().to_string(), &file.display().to_string())
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

/// The SDK versions this host accepts, in words: abi_stable's rule is same minor while 0.x,
/// same major from 1.0 on.
pub fn compatible_range() -> String {
    let mut parts = SDK_VERSION.split('.');
    let (major, minor) = (parts.next().unwrap_or("0"), parts.next().unwrap_or("0"));
    if major == "0" {
        format!("SDK {major}.{minor}.x")
    } else {
        format!("SDK {major}.x")
    }
}
