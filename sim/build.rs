// The simulation answers `getrandom` from its seed (src/entropy.rs). The `getrandom`
// crate finds the function with `dlsym(RTLD_DEFAULT, "getrandom")`, which sees only
// symbols in the dynamic table: export ours from the test and bench binaries.
fn main() {
    println!("cargo::rustc-link-arg-tests=-Wl,--export-dynamic-symbol=getrandom");
    println!("cargo::rustc-link-arg-benches=-Wl,--export-dynamic-symbol=getrandom");
    println!("cargo::rerun-if-changed=build.rs");
}
