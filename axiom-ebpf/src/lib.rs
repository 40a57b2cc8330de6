//! Host-side stub: lets userspace crates name `axiom-ebpf` as a build-dependency so cargo rebuilds
//! them when the kernel programs change. The programs themselves are the `axiom` and
//! `axiom-empty` binaries, built for bpfel-unknown-none by axiomd's build.rs.
#![no_std]
