//! Links the `railyard` binary as a position-dependent executable, as Go links `docker` and `docker compose`. A PIE
//! of this size carries ~96,000 relative relocations that the loader applies at every start, writing (so copying)
//! about 550 pages of `.data.rel.ro`: ~1.7 ms and 560 page faults in every `railyard` process, a sixth of a no-op
//! `railyard apply`. Without PIE those pages are read lazily from the page cache. The binary's own image then has no
//! address randomization (libraries, heap and stacks keep theirs); `RAILYARD_PIE=1` at build time keeps PIE.
//! Tests and examples keep the default.
fn main() {
    println!("cargo:rerun-if-env-changed=RAILYARD_PIE");
    if std::env::var_os("RAILYARD_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
