//! The Dockerfile, checked without a Docker engine (`cargo xtask image` builds it for real, too
//! slowly for the suite): its build stage's step (`dist/install-root.sh /out`) is run into a
//! scratch root, and the runtime stage's environment, entry point and command are read from the
//! Dockerfile and run on that tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use calllogger_test_kit::{workspace, Host};

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    joined
        .iter()
        .filter_map(|l| {
            let (op, rest) = l.trim().split_once(char::is_whitespace)?;
            Some((op.to_owned(), rest.trim().to_owned()))
        })
        .collect()
}

/// `ENV A=1 B=2` of the final stage.
fn runtime_env(instructions: &[(String, String)]) -> BTreeMap<String, String> {
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap();
    instructions[last_from..]
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn json_words(instructions: &[(String, String)], op: &str) -> Vec<String> {
    let (_, value) = instructions.iter().rev().find(|(o, _)| o == op).unwrap();
    serde_json::from_str(value).unwrap_or_else(|e| panic!("{op} {value}: {e}"))
}

#[test]
fn the_dockerfile_steps_build_a_tree_that_runs() {
    let steps = instructions();
    let run_steps: Vec<&str> = steps
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, cmd)| cmd.as_str())
        .collect();
    assert_eq!(
        run_steps.first(),
        Some(&"dist/install-root.sh /out"),
        "the build stage's step is the script this test runs"
    );
    assert!(steps
        .iter()
        .any(|(op, rest)| op == "COPY" && rest == "--from=build /out/ /"));

    // The build stage, into a scratch root instead of /out. Linked as the native Debian
    // package is (the script's `cargo zigbuild` path, glibc 2.31), so this test and the
    // package test share one release build: with fat LTO, one build of the host and the
    // shipped plugins is minutes on this project's machines. The tree is the same either way;
    // the image's native build is `cargo xtask image`'s.
    let root = tempfile::tempdir().unwrap();
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let path = std::env::join_paths(cargo.parent().into_iter().map(Path::to_path_buf).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let status = Command::new("sh")
        .arg("dist/install-root.sh")
        .arg(root.path())
        .current_dir(workspace())
        .env("PATH", path)
        .env(
            "CALLLOGGER_BUILD_TARGET",
            format!(
                "{}-unknown-linux-gnu.{}",
                std::env::consts::ARCH,
                crate::package::GLIBC_BASELINE
            ),
        )
        .status()
        .unwrap();
    assert!(status.success(), "dist/install-root.sh failed");
    let mut tree = Vec::new();
    for dir in ["usr/bin", "usr/lib/calllogger/plugins"] {
        for entry in std::fs::read_dir(root.path().join(dir)).unwrap() {
            let entry = entry.unwrap();
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().unwrap().permissions().mode() & 0o7777;
            tree.push(format!(
                "{dir}/{} {mode:o}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    tree.sort();
    assert_eq!(
        tree,
        [
            "usr/bin/calllogger 755",
            "usr/lib/calllogger/plugins/libcalllogger_beronet.so 644",
            "usr/lib/calllogger/plugins/libcalllogger_mock_calls.so 644",
            "usr/lib/calllogger/plugins/libcalllogger_siemens_hipath_serial.so 644",
        ]
    );

    // The runtime stage: its environment (paths under the scratch root), entry point and
    // command, with TOKEN and PLUGIN as a user sets them.
    let under_root = |value: &str| match value.strip_prefix('/') {
        Some(inside) => root.path().join(inside).display().to_string(),
        None => value.to_owned(),
    };
    let env = runtime_env(&steps);
    for key in [
        "CALLLOGGER_PLUGIN_DIR",
        "CALLLOGGER_STATE_DIR",
        "CALLLOGGER_METRICS_ADDR",
    ] {
        assert!(env.contains_key(key), "ENV {key} missing");
    }
    std::fs::create_dir_all(under_root(&env["CALLLOGGER_STATE_DIR"])).unwrap();
    let entrypoint = json_words(&steps, "ENTRYPOINT");
    let cmd = json_words(&steps, "CMD");
    assert_eq!(cmd, ["run"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let container = |args: &[String]| {
        let mut command = Command::new(under_root(&entrypoint[0]));
        command.args(&entrypoint[1..]).args(args).env_clear();
        for (key, value) in &env {
            command.env(key, under_root(value));
        }
        command
            // One port per test run, not the image's fixed one.
            .env("CALLLOGGER_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("PLUGIN", "MockCalls")
            .env("RUST_LOG", "info");
        command
    };
    let plugins = container(&["plugins".into()]).output().unwrap();
    let table = String::from_utf8_lossy(&plugins.stdout);
    for class in ["BeroNet", "MockCalls", "SiemensHipathSerial"] {
        assert!(
            table.lines().any(|l| l.starts_with(class)),
            "{class} not loaded from the image's plugin folder:\n{table}{}",
            String::from_utf8_lossy(&plugins.stderr)
        );
    }
    let mut host = Host::spawn(container(&cmd));
    let (_, record) = host
        .next_record(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "no record from the container's command; log:\n{}",
                host.log()
            )
        });
    assert!(record["id"].is_string(), "{record}");
    // The image's HEALTHCHECK, run in it while the host runs.
    let (_, healthcheck) = steps
        .iter()
        .rev()
        .find(|(op, _)| op == "HEALTHCHECK")
        .unwrap();
    let (_, check) = healthcheck.split_once("CMD ").unwrap();
    let check: Vec<String> = serde_json::from_str(check).unwrap();
    assert_eq!(
        check[0], entrypoint[0],
        "the HEALTHCHECK runs the host binary"
    );
    // Docker retries it; ready once the main loop waits for events, just after start-up.
    let mut answer = container(&check[1..]).output().unwrap();
    for _ in 0..100 {
        if answer.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        answer = container(&check[1..]).output().unwrap();
    }
    assert!(
        answer.status.success(),
        "HEALTHCHECK failed: {}{}",
        String::from_utf8_lossy(&answer.stdout),
        String::from_utf8_lossy(&answer.stderr)
    );
    host.terminate();
    assert!(host
        .log()
        .contains("/health and /metrics on http://127.0.0.1:"));
}
