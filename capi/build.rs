//! Gives libshmpipe.so its soname, so that programs linked against it (by path, as CMake does,
//! or with -lshmpipe) record `libshmpipe.so` and find it in the library path at run time.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libshmpipe.so");
}
