//! The baseline for `cargo xtask bench sensor`: the same program names on the same tracepoints as
//! the real sensor, each returning at once. What it costs is the price of the hooks themselves, so
//! the sensor's own cost is measured against it.
#![no_std]
#![no_main]

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn proc_exec(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn proc_exit(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "signal", name = "signal_deliver")]
pub fn sig_deliver(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn sig_generate(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_exit_group")]
pub fn exit_group(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn enter_execve(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn enter_execveat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn enter_write(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pwrite64")]
pub fn enter_pwrite64(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn enter_writev(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pwritev")]
pub fn enter_pwritev(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pwritev2")]
pub fn enter_pwritev2(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn enter_sendto(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn enter_sendmsg(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn enter_open(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn enter_openat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn enter_openat2(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn enter_creat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn enter_rename(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn enter_renameat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat2")]
pub fn enter_renameat2(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn enter_unlink(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn enter_unlinkat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn enter_mkdir(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn enter_mkdirat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rmdir")]
pub fn enter_rmdir(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_link")]
pub fn enter_link(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_linkat")]
pub fn enter_linkat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlink")]
pub fn enter_symlink(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlinkat")]
pub fn enter_symlinkat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn exit_open(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn exit_openat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn exit_openat2(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn exit_creat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_rename")]
pub fn exit_rename(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat")]
pub fn exit_renameat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat2")]
pub fn exit_renameat2(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlink")]
pub fn exit_unlink(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlinkat")]
pub fn exit_unlinkat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdir")]
pub fn exit_mkdir(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn exit_mkdirat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_rmdir")]
pub fn exit_rmdir(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_link")]
pub fn exit_link(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_linkat")]
pub fn exit_linkat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlink")]
pub fn exit_symlink(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlinkat")]
pub fn exit_symlinkat(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn enter_connect(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
