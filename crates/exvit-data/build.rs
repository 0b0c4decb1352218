//! Compiles exvit's libjpeg shim (csrc/jpeg.c) and links the system's libjpeg-turbo
//! (Debian: `libjpeg62-turbo-dev`; `.ci/run` installs it when its header is missing).

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg.c");
    println!("cargo:rerun-if-env-changed=EXVIT_JPEG_INCLUDE");
    let mut build = cc::Build::new();
    build.file("csrc/jpeg.c").warnings(true).opt_level(2);
    if let Ok(dir) = std::env::var("EXVIT_JPEG_INCLUDE") {
        build.include(dir);
    }
    if let Ok(dir) = std::env::var("EXVIT_JPEG_LIB") {
        println!("cargo:rustc-link-search=native={dir}");
    }
    build.compile("exvit_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
}
