//! Links the component with a 64 KiB shadow stack instead of rustc's default 1 MiB: wasmhook
//! runs every event in a fresh instance, whose cost grows with the memory it starts with. Deep
//! recursion would overflow it (a clean trap, never memory corruption); raise it if you recurse.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
    }
}
