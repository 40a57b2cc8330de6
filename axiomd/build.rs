//! Builds the kernel programs (the `axiom-ebpf` crate's binaries) for bpfel-unknown-none and leaves
//! them in OUT_DIR, where `include_bytes_aligned!` embeds them into axiomd.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "axiom-ebpf")
        .ok_or_else(|| anyhow!("axiom-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("axiom-ebpf manifest has no parent"))?;
    // Every source the kernel programs are built from, file by file (a directory alone is not a
    // reliable trigger: edits inside it were missed). The paths are given relative to this
    // package, which cargo resolves against the checkout being built: absolute ones were kept in
    // the fingerprint of a target directory shared by two checkouts, so an edit in the second was
    // not seen while the first still existed, and a stale object was embedded.
    let here = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?,
    );
    let rel = |p: &std::path::Path| -> std::path::PathBuf {
        match (
            here.parent(),
            p.strip_prefix(meta.workspace_root.as_std_path()),
        ) {
            (Some(ws), Ok(tail)) if ws == meta.workspace_root.as_std_path() => {
                std::path::Path::new("..").join(tail)
            }
            _ => p.to_path_buf(),
        }
    };
    let common = meta.workspace_root.join("axiom-common/src");
    for dir in [root.join("src"), common] {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            println!("cargo:rerun-if-changed={}", rel(&e?.path()).display());
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        rel(root.join("Cargo.toml").as_std_path()).display()
    );
    // The programs build on the same stable toolchain as everything else; `-Z build-std=core` is
    // unlocked for that inner build only.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    // SAFETY: build scripts are single-threaded here; the variable is read by the child cargo.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: pkg.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
