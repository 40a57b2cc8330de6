//! Files written where the sensor could not capture the bytes: copied in by the kernel
//! (`sendfile`, `copy_file_range`, `splice`: no user buffer to read), stored through a shared
//! writable mapping (no system call at all), or written past the capture limit. Each such file
//! is read back once its writer closes the descriptor (a mapping: once the process exits), and
//! what it then holds goes to the rules as that file's content: `cp todo.txt app.py` or a TODO
//! at byte 5,000 of one write is judged like any other write.
//!
//! The read is made as root but only of what the writer could read itself: the path's last
//! component is not followed, and the file must be a regular file its writer owns (a writer
//! that swapped the path for a link to `/etc/shadow` gets nothing read).
use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};

use axiom_proto::wire::{Body, Event, WriteCall};
use foldhash::HashMap;

/// Bytes read back per file at most.
pub(super) const READ_BACK_MAX: usize = 64 << 10;
/// Files waiting per process, and in all; past either, the loss `read_back_shed`.
const PER_PROCESS: usize = 16;
const IN_ALL: usize = 4096;

/// One file to read back: which descriptor's close releases it (`None`: the process's exit),
/// and the write that made it wait (its identity goes on the event read back).
struct Unread {
    fd: Option<i32>,
    path: String,
    write: Event,
}

#[derive(Default)]
pub(super) struct ReadBack {
    waiting: HashMap<u32, Vec<Unread>>,
    count: usize,
}

/// Whether an output event wrote bytes the sensor did not see, into a file: the file to read
/// back, and whether only the process's exit releases it (a shared mapping outlives its fd).
pub(super) fn unseen(ev: &Event) -> Option<(&str, bool)> {
    let Body::Output {
        syscall,
        target: Some(t),
        captured,
        count,
        text,
        ..
    } = &ev.body
    else {
        return None;
    };
    let copied = matches!(
        syscall,
        WriteCall::Sendfile | WriteCall::CopyFileRange | WriteCall::Splice | WriteCall::Mmap
    );
    // A long write whose captured part is not text (an object file, a .pyc, an archive) is not
    // read back: what follows is no text either, and builds write many of them.
    let past_capture = u64::from(*captured) < *count && !text.is_empty();
    let file = axiom_rules::write_scope(Some(t.as_str())) == axiom_rules::Scope::FileWrite;
    (file && (copied || past_capture)).then_some((t.as_str(), *syscall == WriteCall::Mmap))
}

impl ReadBack {
    /// Remembers a write to read back; false when a bound refused it.
    pub(super) fn note(&mut self, ev: &Event) -> bool {
        let Some((path, at_exit)) = unseen(ev) else {
            return true;
        };
        let Body::Output { fd, .. } = &ev.body else {
            return true;
        };
        let fd = (!at_exit).then_some(*fd);
        let list = self.waiting.entry(ev.tgid).or_default();
        if list.iter().any(|u| u.fd == fd && u.path == path) {
            return true;
        }
        if list.len() >= PER_PROCESS || self.count >= IN_ALL {
            return false;
        }
        list.push(Unread {
            fd,
            path: path.to_string(),
            write: ev.clone(),
        });
        self.count += 1;
        true
    }

    /// The files released by closing `fds` of `tgid` (all of them, and the mappings, at its
    /// exit: `None`), read back as output events.
    pub(super) fn released(&mut self, tgid: u32, fds: Option<&dyn Fn(i32) -> bool>) -> Vec<Event> {
        let Some(list) = self.waiting.get_mut(&tgid) else {
            return Vec::new();
        };
        let (due, keep): (Vec<Unread>, Vec<Unread>) =
            std::mem::take(list)
                .into_iter()
                .partition(|u| match (fds, u.fd) {
                    (None, _) => true,
                    (Some(f), Some(fd)) => f(fd),
                    (Some(_), None) => false,
                });
        self.count -= due.len();
        if keep.is_empty() {
            self.waiting.remove(&tgid);
        } else {
            *list = keep;
        }
        due.into_iter().filter_map(read).collect()
    }
}

/// The file's content as an output event of its writer, when it is still a regular file the
/// writer owns.
fn read(u: Unread) -> Option<Event> {
    use std::os::unix::fs::MetadataExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&u.path)
        .ok()?;
    let m = f.metadata().ok()?;
    if !m.is_file() || m.uid() != u.write.uid {
        return None;
    }
    let mut data = Vec::with_capacity((m.len() as usize).min(READ_BACK_MAX));
    f.take(READ_BACK_MAX as u64).read_to_end(&mut data).ok()?;
    let read = data.len() as u64;
    // A mapped file is often grown with ftruncate and written at its start: its zero tail is
    // no content (and would make the text read as binary).
    let end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    data.truncate(end);
    let (fd, syscall) = match &u.write.body {
        Body::Output { fd, syscall, .. } => (*fd, *syscall),
        _ => return None,
    };
    let text = if super::decode::is_binary(&data) {
        String::new()
    } else {
        String::from_utf8_lossy(&data).into_owned()
    };
    Some(Event {
        truncated: m.len() > read,
        // Just after the write it follows.
        time_ns: u.write.time_ns + 1,
        body: Body::Output {
            fd,
            syscall,
            read_back: true,
            count: m.len(),
            target: Some(u.path),
            text,
            captured: data.len() as u32,
            redacted: Vec::new(),
        },
        ..u.write
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fd: i32, syscall: &str, path: &str, captured: u32, count: u64) -> Event {
        let syscall = WriteCall::from_name(syscall);
        Event {
            seq: 0,
            time_ns: 10,
            agent: 1,
            pid: 7,
            tgid: 7,
            ppid: 1,
            uid: nix::unistd::getuid().as_raw(),
            cgroup_id: 0,
            comm: "cp".into(),
            truncated: true,
            body: Body::Output {
                fd,
                syscall,
                read_back: false,
                count,
                target: Some(path.into()),
                text: String::new(),
                captured,
                redacted: Vec::new(),
            },
        }
    }

    /// A copy is read back at its close, a mapping at the exit; a link put in the file's place
    /// is not followed.
    #[test]
    fn copies_are_read_back_when_closed_and_links_are_not_followed() {
        let dir = std::env::temp_dir().join(format!("axiom-readback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b, c) = (dir.join("a.py"), dir.join("b.py"), dir.join("c.py"));
        std::fs::write(&a, "# TODO: copied\n").expect("a");
        std::fs::write(&b, b"# TODO: mapped\n\0\0\0\0").expect("b");
        let mut r = ReadBack::default();
        assert!(r.note(&write(
            3,
            "copy_file_range",
            &a.display().to_string(),
            0,
            15
        )));
        assert!(r.note(&write(4, "mmap", &b.display().to_string(), 0, 15)));
        assert!(r.note(&write(5, "sendfile", &c.display().to_string(), 0, 15)));
        // Not a file, all of it seen, or a long write that is not text: nothing to read back.
        assert!(r.note(&write(6, "write", &a.display().to_string(), 15, 15)));
        assert!(unseen(&write(6, "write", &a.display().to_string(), 4096, 9000)).is_none());
        assert!(r.note(&write(6, "sendfile", "pipe:[1]", 0, 15)));
        // c.py becomes a link to a file the writer does not own by the time it is read.
        std::os::unix::fs::symlink("/etc/shadow", &c).expect("link");
        let closed = r.released(7, Some(&|fd| fd == 3));
        assert_eq!(closed.len(), 1);
        assert!(
            matches!(&closed[0].body, Body::Output { text, .. } if text.contains("TODO: copied"))
        );
        let at_exit = r.released(7, None);
        assert_eq!(
            at_exit.len(),
            1,
            "the mapping at the exit; the link not followed"
        );
        assert!(
            matches!(&at_exit[0].body, Body::Output { text, .. } if text.contains("TODO: mapped"))
        );
        assert_eq!(r.count, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
