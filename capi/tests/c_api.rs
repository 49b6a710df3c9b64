//! The C API from C and C++ programs, built here with the system's compilers (`$CC`, else
//! `cc`; `$CXX`, else `c++`) against `include/` and the `libshmpipe.so` cargo built for this
//! test, and run against a Rust peer in this process, in both directions:
//!
//! - `examples/pipe.c` over a key (either side first), a ring file, a shmid, a memfd inherited
//!   by the C program, and a memfd the C program makes and sends over a Unix socket;
//! - `examples/pipe.cpp` (the C++ wrapper `include/shmpipe.hpp`) over a key;
//! - `tests/c/hostile.c`: a writer with a second mapping rewrites record headers under the C
//!   consumer, which must fail with `SHMPIPE_STATUS_CORRUPTED` and the right corruption kind
//!   without reading or writing out of bounds; and the edges of the boundary (NULL pointers,
//!   impossible lengths, calls in the wrong state, buffers too small);
//! - `install.sh` into a temporary prefix, and the examples built from there with pkg-config
//!   (shared and static) and with CMake (`find_package(shmpipe CONFIG)`, its imported targets
//!   and its version file).
//!
//! A machine without pkg-config or cmake fails the install tests, with a message saying so.
//!
//! A machine without a C or C++ compiler fails these tests, with a message saying so.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmpipe_rs::{Error, Key, Memfd, RecvError, Ring, RingConfig, memfd};

/// Messages per run: enough for the 64-slot ring to be full and empty many times.
const N: u64 = 20_000;
/// No child may run longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Length of message `i` (as `msg_len` in examples/pipe.c).
fn msg_len(i: u64) -> usize {
    ((i * 37) % 301) as usize
}

/// Message `i` (as examples/pipe.c builds it).
fn msg(i: u64) -> Vec<u8> {
    (0..msg_len(i))
        .map(|j| (i.wrapping_mul(7) + j as u64 * 13) as u8)
        .collect()
}

/// Message `i` of examples/pipe.cpp.
fn cpp_msg(i: u64) -> Vec<u8> {
    format!("message {i}{}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// A key no other test (or run) uses at the same time.
fn unique_key() -> Key {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Key::Number(0x5c00_0000 | ((std::process::id() & 0xffff) << 8) as i32 | n as i32)
}

/// Where cargo put `libshmpipe.so` and `.a`: beside this test's executable.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's executable");
    let dir = exe.parent().expect("deps directory").to_path_buf();
    assert!(
        dir.join("libshmpipe.so").exists(),
        "no libshmpipe.so in {}",
        dir.display()
    );
    dir
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a compiler (`$var`, else `default`) with `args`; the error says what to install.
fn compile(var: &str, default: &str, args: &[&str], out: &Path) -> Result<(), String> {
    let cc = std::env::var(var).unwrap_or_else(|_| default.into());
    let mut words = cc.split_ascii_whitespace();
    let program = words.next().ok_or(format!("${var} is empty"))?;
    // Built under a name of our own and renamed into place: concurrent runs never execute a
    // half-written binary.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let output = match Command::new(program)
        .args(words)
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no compiler: `{cc}` was not found. These tests build the C and C++ examples; \
                 install one (e.g. gcc, g++) or set ${var}."
            ));
        }
        Err(e) => return Err(format!("running `{cc}`: {e}")),
    };
    if !output.status.success() {
        return Err(format!(
            "`{cc} {}` failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("rename {}: {e}", tmp.display()))
}

/// A program built once per run from `source` (relative to the crate) against the header and
/// the shared library, with warnings as errors.
fn program(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    source: &str,
    cpp: bool,
) -> &'static Path {
    let built = cell.get_or_init(|| {
        let src = manifest_dir().join(source);
        let name = format!("shmpipe-capi-{}", source.replace(['/', '.'], "-"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let include = format!("-I{}", manifest_dir().join("include").display());
        let libs = lib_dir();
        let (l, rpath) = (
            format!("-L{}", libs.display()),
            format!("-Wl,-rpath,{}", libs.display()),
        );
        let src = src.to_str().expect("UTF-8 path");
        let (var, default, std) = if cpp {
            ("CXX", "c++", "-std=c++17")
        } else {
            ("CC", "cc", "-std=c11")
        };
        let args = [
            std,
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            &include,
            src,
            &l,
            "-lshmpipe",
            &rpath,
        ];
        compile(var, default, &args, &out).map(|()| out)
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

fn pipe_c() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    program(&BUILT, "examples/pipe.c", false)
}

fn pipe_cpp() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    program(&BUILT, "examples/pipe.cpp", true)
}

/// A child that is killed if the test ends before it does.
struct Reaped(Option<Child>);

impl Reaped {
    fn spawn(cmd: &mut Command) -> Reaped {
        // Cargo's library path leads to target/debug, where another build's libshmpipe.so may
        // be: the programs find the one they were linked with by their rpath.
        let child = cmd
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the C program");
        Reaped(Some(child))
    }

    /// Waits (bounded) and asserts it succeeded; its output.
    fn success(mut self) -> Output {
        let mut child = self.0.take().expect("not yet waited");
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
                panic!("the program ran longer than {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output().expect("output");
        assert!(
            out.status.success(),
            "the program failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The ring's SysV segment is removed when the test ends, however it ends (the C side may fail
/// before it claims, leaving the ring at its key).
struct RemoveKey(Key);

impl Drop for RemoveKey {
    fn drop(&mut self) {
        if let Ok(ring) = Ring::open(self.0, &RingConfig::new()) {
            let _ = ring.remove();
        }
    }
}

/// The Rust consumer: receives `n` messages made by `expected`, then the end of stream.
fn rust_receives(ring: &Ring, n: u64, expected: fn(u64) -> Vec<u8>) {
    let mut rx = ring.consumer().expect("Rust consumer");
    let mut buf = Vec::new();
    for i in 0..n {
        rx.recv_vec_timeout(&mut buf, TIMEOUT)
            .unwrap_or_else(|e| panic!("Rust consumer, message {i}: {e}"));
        assert_eq!(buf, expected(i), "message {i}");
    }
    let end = rx.recv_vec_timeout(&mut buf, TIMEOUT);
    assert!(matches!(end, Err(RecvError::Disconnected)), "{end:?}");
}

/// The Rust producer: sends `n` messages made by `make`, then closes.
fn rust_sends(ring: &Ring, n: u64, make: fn(u64) -> Vec<u8>) {
    let mut tx = ring.producer().expect("Rust producer");
    for i in 0..n {
        tx.send_timeout(&make(i), TIMEOUT)
            .unwrap_or_else(|e| panic!("Rust producer, message {i}: {e}"));
    }
    tx.close().expect("a clean close");
}

fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(64)
        .join_any_shape()
}

/// Opens the ring at `key` once the other side created it.
fn open_when_there(key: Key) -> Ring {
    let start = Instant::now();
    loop {
        match Ring::open(key, &RingConfig::new()) {
            Ok(ring) => return ring,
            Err(Error::NotFound { .. }) if start.elapsed() < TIMEOUT => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("open {key}: {e}"),
        }
    }
}

fn key_arg(key: Key) -> String {
    format!("key:{:#x}", key.raw())
}

#[test]
fn c_sends_rust_receives_by_key_rust_first() {
    let key = unique_key();
    let _rm = RemoveKey(key);
    let ring = Ring::open_or_create(key, &config()).expect("Rust creates");
    let c = Reaped::spawn(Command::new(pipe_c()).args(["send", &key_arg(key), &N.to_string()]));
    rust_receives(&ring, N, msg);
    c.success();
}

#[test]
fn rust_sends_c_receives_by_key_c_first() {
    let key = unique_key();
    let _rm = RemoveKey(key);
    let c = Reaped::spawn(Command::new(pipe_c()).args(["recv", &key_arg(key), &N.to_string()]));
    // The C side creates the ring; the Rust side joins whatever shape it chose.
    rust_sends(&open_when_there(key), N, msg);
    let out = c.success();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("recv {N} messages\n")
    );
}

#[test]
fn c_sends_rust_receives_by_path() {
    let path = std::env::temp_dir().join(format!("shmpipe-capi-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ring = Ring::create(path.as_path(), &config()).expect("Rust creates the file");
    let place = format!("path:{}", path.display());
    let c = Reaped::spawn(Command::new(pipe_c()).args(["send", &place, &N.to_string()]));
    rust_receives(&ring, N, msg);
    c.success();
    let _ = std::fs::remove_file(&path); // gone already once both claimed
}

#[test]
fn rust_sends_c_receives_by_shmid() {
    let ring = Ring::create(Key::Private, &config()).expect("Rust creates");
    let shmid = ring.shmid().expect("a segment");
    let place = format!("shmid:{shmid}");
    let c = Reaped::spawn(Command::new(pipe_c()).args(["recv", &place, &N.to_string()]));
    rust_sends(&ring, N, msg);
    c.success();
    let _ = ring.remove();
}

/// Makes `fd` the child's descriptor 3 (not close-on-exec).
fn as_fd3(cmd: &mut Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: `dup2` is async-signal-safe and touches only the child's descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn rust_sends_c_receives_by_inherited_memfd() {
    let ring = Ring::create(Memfd, &config()).expect("Rust creates a memfd ring");
    let fd = ring
        .memfd()
        .expect("a memfd")
        .try_clone_to_owned()
        .expect("dup");
    let mut cmd = Command::new(pipe_c());
    cmd.args(["recv", "fd:3", &N.to_string()]);
    as_fd3(&mut cmd, &fd);
    let c = Reaped::spawn(&mut cmd);
    drop(fd);
    rust_sends(&ring, N, msg);
    c.success();
}

#[test]
fn c_sends_rust_receives_by_memfd_over_a_socket() {
    let (here, there) = UnixStream::pair().expect("socketpair");
    let mut cmd = Command::new(pipe_c());
    cmd.args(["send", "memfd-send:3", &N.to_string()]);
    // Kept open until the child has it: the pre-exec hook dups it by number.
    let there = OwnedFd::from(there);
    as_fd3(&mut cmd, &there);
    let c = Reaped::spawn(&mut cmd);
    drop(there);
    let fd = memfd::recv_fd(&here).expect("the C side sends its memfd");
    let ring = Ring::open(fd, &RingConfig::new()).expect("Rust opens the C side's memfd");
    rust_receives(&ring, N, msg);
    c.success();
}

#[test]
fn cpp_sends_rust_receives() {
    let key = unique_key();
    let _rm = RemoveKey(key);
    let ring = Ring::open_or_create(key, &config()).expect("Rust creates");
    let k = format!("{:#x}", key.raw());
    let c = Reaped::spawn(Command::new(pipe_cpp()).args(["send", &k, &N.to_string()]));
    rust_receives(&ring, N, cpp_msg);
    c.success();
}

#[test]
fn rust_sends_cpp_receives() {
    let key = unique_key();
    let _rm = RemoveKey(key);
    let k = format!("{:#x}", key.raw());
    let c = Reaped::spawn(Command::new(pipe_cpp()).args(["recv", &k, &N.to_string()]));
    rust_sends(&open_when_there(key), N, cpp_msg);
    let out = c.success();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("recv {N} messages\n")
    );
}

#[test]
fn hostile_writer_and_edges_from_c() {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let out = Reaped::spawn(&mut Command::new(program(
        &BUILT,
        "tests/c/hostile.c",
        false,
    )))
    .success();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.ends_with("0 failures\n"), "{report}");
    // Every corruption check ran (a program that stopped early would not say "0 failures").
    assert_eq!(report.matches("is CORRUPTED").count(), 12, "{report}");
}

/// A directory of this run under the test's temporary directory, removed when the test ends,
/// however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("shmpipe-capi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a build tool the tests need (`package` installs it on Debian); a missing tool or a
/// failed run fails the test, saying which.
fn run_tool(cmd: &mut Command, package: &str) -> Output {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{tool}` was not found: the C API's install tests need it (apt-get install {package})"
        ),
        Err(e) => panic!("running `{tool}`: {e}"),
    };
    assert!(
        out.status.success(),
        "`{tool} {:?}` failed ({}):\n{}{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs the C API with `install.sh` under `prefix`, from the library cargo built for these
/// tests, and checks that every file is there.
fn install(prefix: &Path) {
    run_tool(
        Command::new("sh")
            .arg(manifest_dir().join("install.sh"))
            .arg(prefix)
            .env("SHMPIPE_LIB_DIR", lib_dir()),
        "dash",
    );
    for file in [
        "lib/libshmpipe.so",
        "lib/libshmpipe.a",
        "include/shmpipe.h",
        "include/shmpipe.hpp",
        "lib/pkgconfig/shmpipe.pc",
        "lib/cmake/shmpipe/shmpipeConfig.cmake",
        "lib/cmake/shmpipe/shmpipeConfigVersion.cmake",
    ] {
        assert!(prefix.join(file).is_file(), "{file} not installed");
    }
}

/// `program` (examples/pipe.c or pipe.cpp, whose messages `make` builds) against a Rust peer,
/// each over a ring of its own at a key (its argument `place` and the key in hex): it sends
/// `n` messages that the Rust consumer checks byte for byte, then receives (and checks) `n`
/// from a Rust producer.
fn both_ways(program: &Path, place: &str, n: u64, make: fn(u64) -> Vec<u8>) {
    let count = n.to_string();
    for send in [true, false] {
        let key = unique_key();
        let _rm = RemoveKey(key);
        let ring = Ring::open_or_create(key, &config()).expect("Rust creates");
        let place = format!("{place}{:#x}", key.raw());
        let mode = if send { "send" } else { "recv" };
        let c = Reaped::spawn(Command::new(program).args([mode, &place, &count]));
        if send {
            rust_receives(&ring, n, make);
        } else {
            rust_sends(&ring, n, make);
        }
        let out = c.success();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{mode} {n} messages\n")
        );
    }
}

#[test]
fn install_then_build_with_pkg_config() {
    let tmp = TempDir::new("pkg-config");
    let prefix = tmp.0.join("prefix");
    install(&prefix);
    let pkg_config = |args: &[&str]| -> Vec<String> {
        let out = run_tool(
            Command::new("pkg-config")
                .args(args)
                .arg("shmpipe")
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
            "pkg-config",
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .split_ascii_whitespace()
            .map(String::from)
            .collect()
    };
    let example = manifest_dir().join("examples/pipe.c");
    let example = example.to_str().expect("UTF-8");
    // Shared, as a user builds it: `cc app.c $(pkg-config --cflags --libs shmpipe)`.
    let mut args: Vec<String> = vec!["-std=c11".into(), example.into()];
    args.extend(pkg_config(&["--cflags", "--libs"]));
    let rpath = format!("-Wl,-rpath,{}", prefix.join("lib").display());
    args.push(rpath);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shared = tmp.0.join("pipe-shared");
    compile("CC", "cc", &args, &shared).unwrap_or_else(|e| panic!("{e}"));
    // Static: the archive and what pkg-config says it needs (Libs.private).
    let archive = prefix.join("lib/libshmpipe.a");
    let mut args: Vec<String> = vec!["-std=c11".into(), example.into()];
    args.extend(pkg_config(&["--cflags"]));
    args.push(archive.to_str().expect("UTF-8").into());
    args.extend(
        pkg_config(&["--static", "--libs"])
            .into_iter()
            .filter(|a| a != "-lshmpipe" && !a.starts_with("-L")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fixed = tmp.0.join("pipe-static");
    compile("CC", "cc", &args, &fixed).unwrap_or_else(|e| panic!("{e}"));
    // Both run against a Rust peer.
    both_ways(&shared, "key:", 1000, msg);
    both_ways(&fixed, "key:", 1000, msg);
}

/// A user's CMake project: the C example linked with the shared and the static imported
/// target, the C++ example with the shared one.
const CMAKE_PROJECT: &str = r#"cmake_minimum_required(VERSION 3.16)
project(shmpipe_user C CXX)
find_package(shmpipe 0.1 CONFIG REQUIRED)
set(CMAKE_C_STANDARD 11)
add_executable(pipe_shared "@DIR@/examples/pipe.c")
target_link_libraries(pipe_shared PRIVATE shmpipe::shmpipe)
add_executable(pipe_static "@DIR@/examples/pipe.c")
target_link_libraries(pipe_static PRIVATE shmpipe::shmpipe_static)
add_executable(pipe_cpp "@DIR@/examples/pipe.cpp")
target_compile_features(pipe_cpp PRIVATE cxx_std_17)
target_link_libraries(pipe_cpp PRIVATE shmpipe::shmpipe)
"#;

/// Requests of `find_package(shmpipe ...)` with the project's pointer size, and whether the
/// installed 0.1.x (a 64-bit library) meets them.
const CMAKE_REQUESTS: &[(&str, u32, bool)] = &[
    ("", 8, true),
    ("0.1", 8, true),
    ("0.1.0", 8, true),
    ("0.2", 8, false),
    ("0.0", 8, false),
    ("1.0", 8, false),
    ("0.0...0.5", 8, true),
    ("0.1...<0.2", 8, true),
    ("0.0...<0.1", 8, false),
    ("0.2...0.3", 8, false),
    ("", 4, false),
    ("0.1", 4, false),
];

#[test]
fn install_then_build_with_cmake() {
    assert_eq!(
        env!("CARGO_PKG_VERSION_MAJOR"),
        "0",
        "CMAKE_REQUESTS assume 0.1.x"
    );
    assert_eq!(
        env!("CARGO_PKG_VERSION_MINOR"),
        "1",
        "CMAKE_REQUESTS assume 0.1.x"
    );
    let tmp = TempDir::new("cmake");
    let prefix = tmp.0.join("prefix");
    install(&prefix);
    let prefix_path = format!("-DCMAKE_PREFIX_PATH={}", prefix.display());
    let cmake = |source: &Path, build: &Path| {
        run_tool(
            Command::new("cmake")
                .arg("-S")
                .arg(source)
                .arg("-B")
                .arg(build)
                .arg(&prefix_path),
            "cmake",
        )
    };

    // The version file: which requests the installation meets.
    let versions = tmp.0.join("versions");
    let mut script = String::from("cmake_minimum_required(VERSION 3.19)\nproject(versions NONE)\n");
    for (request, bits, _) in CMAKE_REQUESTS {
        script += &format!(
            "set(CMAKE_SIZEOF_VOID_P {bits})\nunset(shmpipe_DIR CACHE)\n\
             find_package(shmpipe {request} CONFIG QUIET)\n\
             message(STATUS \"request [{request}] {bits}: ${{shmpipe_FOUND}}\")\n"
        );
    }
    std::fs::create_dir_all(&versions).expect("mkdir");
    std::fs::write(versions.join("CMakeLists.txt"), script).expect("write CMakeLists.txt");
    let out = cmake(&versions, &versions.join("build"));
    let log = String::from_utf8_lossy(&out.stdout);
    for (request, bits, found) in CMAKE_REQUESTS {
        let line = format!(
            "request [{request}] {bits}: {}",
            if *found { "1" } else { "0" }
        );
        assert!(log.contains(&line), "expected `{line}`:\n{log}");
    }

    // A user's project: configured, built, and its programs run against a Rust peer.
    let project = tmp.0.join("project");
    std::fs::create_dir_all(&project).expect("mkdir");
    let dir = manifest_dir().to_str().expect("UTF-8 path");
    std::fs::write(
        project.join("CMakeLists.txt"),
        CMAKE_PROJECT.replace("@DIR@", dir),
    )
    .expect("write CMakeLists.txt");
    let build = project.join("build");
    cmake(&project, &build);
    run_tool(
        Command::new("cmake")
            .arg("--build")
            .arg(&build)
            .arg("--parallel"),
        "cmake",
    );
    // The shared programs find the installed library by the run path CMake gave them.
    both_ways(&build.join("pipe_shared"), "key:", 1000, msg);
    both_ways(&build.join("pipe_cpp"), "", 1000, cpp_msg);
    // The static one needs no libshmpipe.so at all.
    std::fs::remove_file(prefix.join("lib/libshmpipe.so")).expect("remove the shared library");
    both_ways(&build.join("pipe_static"), "key:", 1000, msg);
}
