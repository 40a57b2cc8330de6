//! The baseline for `cargo xtask bench sensor`: the same program names on the same tracepoints as
//! the real sensor (`axiom_common::HOOKS`, in the same order), each returning at once. What it
//! costs is the price of the hooks themselves, so the sensor's own cost is measured against it.
//! axiomd's unit test `empty_object_defines_every_hook` fails when a hook is added to the sensor
//! and not here.
#![no_std]
#![no_main]

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

macro_rules! empty {
    ($($prog:ident => $cat:literal / $ev:literal),* $(,)?) => {
        $(
            #[tracepoint(category = $cat, name = $ev)]
            pub fn $prog(_ctx: TracePointContext) -> u32 {
                0
            }
        )*
    };
}

empty! {
    task_newtask => "task" / "task_newtask",
    cgroup_attach => "cgroup" / "cgroup_attach_task",
    proc_exec => "sched" / "sched_process_exec",
    proc_exit => "sched" / "sched_process_exit",
    sig_deliver => "signal" / "signal_deliver",
    sig_generate => "signal" / "signal_generate",
    exit_group => "syscalls" / "sys_enter_exit_group",
    enter_execve => "syscalls" / "sys_enter_execve",
    enter_execveat => "syscalls" / "sys_enter_execveat",
    enter_write => "syscalls" / "sys_enter_write",
    enter_pwrite64 => "syscalls" / "sys_enter_pwrite64",
    enter_writev => "syscalls" / "sys_enter_writev",
    enter_pwritev => "syscalls" / "sys_enter_pwritev",
    enter_pwritev2 => "syscalls" / "sys_enter_pwritev2",
    enter_sendto => "syscalls" / "sys_enter_sendto",
    enter_sendmsg => "syscalls" / "sys_enter_sendmsg",
    enter_sendfile64 => "syscalls" / "sys_enter_sendfile64",
    enter_copy_file_range => "syscalls" / "sys_enter_copy_file_range",
    enter_splice => "syscalls" / "sys_enter_splice",
    enter_mmap => "syscalls" / "sys_enter_mmap",
    enter_open => "syscalls" / "sys_enter_open",
    enter_openat => "syscalls" / "sys_enter_openat",
    enter_openat2 => "syscalls" / "sys_enter_openat2",
    enter_creat => "syscalls" / "sys_enter_creat",
    enter_rename => "syscalls" / "sys_enter_rename",
    enter_renameat => "syscalls" / "sys_enter_renameat",
    enter_renameat2 => "syscalls" / "sys_enter_renameat2",
    enter_unlink => "syscalls" / "sys_enter_unlink",
    enter_unlinkat => "syscalls" / "sys_enter_unlinkat",
    enter_mkdir => "syscalls" / "sys_enter_mkdir",
    enter_mkdirat => "syscalls" / "sys_enter_mkdirat",
    enter_rmdir => "syscalls" / "sys_enter_rmdir",
    enter_link => "syscalls" / "sys_enter_link",
    enter_linkat => "syscalls" / "sys_enter_linkat",
    enter_symlink => "syscalls" / "sys_enter_symlink",
    enter_symlinkat => "syscalls" / "sys_enter_symlinkat",
    exit_open => "syscalls" / "sys_exit_open",
    exit_openat => "syscalls" / "sys_exit_openat",
    exit_openat2 => "syscalls" / "sys_exit_openat2",
    exit_creat => "syscalls" / "sys_exit_creat",
    exit_rename => "syscalls" / "sys_exit_rename",
    exit_renameat => "syscalls" / "sys_exit_renameat",
    exit_renameat2 => "syscalls" / "sys_exit_renameat2",
    exit_unlink => "syscalls" / "sys_exit_unlink",
    exit_unlinkat => "syscalls" / "sys_exit_unlinkat",
    exit_mkdir => "syscalls" / "sys_exit_mkdir",
    exit_mkdirat => "syscalls" / "sys_exit_mkdirat",
    exit_rmdir => "syscalls" / "sys_exit_rmdir",
    exit_link => "syscalls" / "sys_exit_link",
    exit_linkat => "syscalls" / "sys_exit_linkat",
    exit_symlink => "syscalls" / "sys_exit_symlink",
    exit_symlinkat => "syscalls" / "sys_exit_symlinkat",
    enter_connect => "syscalls" / "sys_enter_connect",
    enter_dup => "syscalls" / "sys_enter_dup",
    enter_dup2 => "syscalls" / "sys_enter_dup2",
    enter_dup3 => "syscalls" / "sys_enter_dup3",
    enter_fcntl => "syscalls" / "sys_enter_fcntl",
    exit_dup => "syscalls" / "sys_exit_dup",
    exit_dup2 => "syscalls" / "sys_exit_dup2",
    exit_dup3 => "syscalls" / "sys_exit_dup3",
    exit_fcntl => "syscalls" / "sys_exit_fcntl",
    enter_chdir => "syscalls" / "sys_enter_chdir",
    exit_chdir => "syscalls" / "sys_exit_chdir",
    enter_fchdir => "syscalls" / "sys_enter_fchdir",
    exit_fchdir => "syscalls" / "sys_exit_fchdir",
    enter_unshare => "syscalls" / "sys_enter_unshare",
    enter_close => "syscalls" / "sys_enter_close",
    enter_close_range => "syscalls" / "sys_enter_close_range",
    enter_pipe => "syscalls" / "sys_enter_pipe",
    enter_pipe2 => "syscalls" / "sys_enter_pipe2",
    exit_pipe => "syscalls" / "sys_exit_pipe",
    exit_pipe2 => "syscalls" / "sys_exit_pipe2",
    enter_socketpair => "syscalls" / "sys_enter_socketpair",
    exit_socketpair => "syscalls" / "sys_exit_socketpair",
    exit_socket => "syscalls" / "sys_exit_socket",
    exit_accept => "syscalls" / "sys_exit_accept",
    exit_accept4 => "syscalls" / "sys_exit_accept4",
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
