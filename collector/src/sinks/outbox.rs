//! A sink's durable outbox, one directory per sink under `<data_dir>/outbox/`:
//!
//! - `groups.json`: the grouping state (alerts accepted but not yet notified), replaced
//!   atomically whenever it changes;
//! - `pending/<created>-<id>.json`: each rendered notification until it is delivered or given
//!   up; rewritten after each failed attempt so the attempt count survives restarts;
//! - `dead/<id>.json`: a notification given up on, until it is in the `dead_letters` table.
//!
//! Every write is a write to a temporary file, fsync, rename, fsync of the directory: a crash
//! leaves the old or the new file, never a torn one. With encryption at rest every file is
//! sealed with the storage key (`FileSealer`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::{sync_dir, write_atomic};
use crate::storage::crypto::FileSealer;

use super::group::Groups;

/// A rendered notification waiting for delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub id: String,
    pub group_key: String,
    pub created_ns: i64,
    pub service: String,
    pub fingerprints: Vec<String>,
    pub body: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_ns: i64,
    #[serde(default)]
    pub last_status: Option<u16>,
    #[serde(default)]
    pub last_error: String,
    /// Set when given up: why (a `dead_letters` reason).
    #[serde(default)]
    pub dead_reason: Option<String>,
}

impl Message {
    fn file_name(&self) -> String {
        format!("{:020}-{}.json", self.created_ns.max(0), self.id)
    }
}

pub struct Outbox {
    dir: PathBuf,
    sealer: FileSealer,
}

/// What a sink finds in its outbox at start.
pub struct Recovered {
    pub groups: Groups,
    pub pending: Vec<Message>,
    pub dead: Vec<Message>,
}

const GROUPS: &str = "groups.json";
const PENDING: &str = "pending";
const DEAD: &str = "dead";
const GROUPS_PURPOSE: &[u8] = b"vigil outbox groups";
const MESSAGE_PURPOSE: &[u8] = b"vigil outbox message";

impl Outbox {
    /// Opens (creating) the outbox of one sink and reads what it holds. Unreadable files are
    /// renamed to `*.corrupt` and reported, never silently dropped.
    pub fn open(dir: &Path, sealer: FileSealer) -> std::io::Result<(Self, Recovered)> {
        for d in [dir.to_owned(), dir.join(PENDING), dir.join(DEAD)] {
            std::fs::create_dir_all(&d)?;
        }
        let outbox = Outbox {
            dir: dir.to_owned(),
            sealer,
        };
        let groups = match std::fs::read(dir.join(GROUPS)) {
            Ok(bytes) => outbox
                .decode(GROUPS_PURPOSE, bytes, "the outbox's groups")
                .unwrap_or_else(|e| {
                    quarantine(&dir.join(GROUPS), &e);
                    Groups::default()
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Groups::default(),
            Err(e) => return Err(e),
        };
        let recovered = Recovered {
            groups,
            pending: outbox.read_messages(&dir.join(PENDING))?,
            dead: outbox.read_messages(&dir.join(DEAD))?,
        };
        Ok((outbox, recovered))
    }

    pub fn save_groups(&self, groups: &Groups) -> std::io::Result<()> {
        let bytes = self.encode(GROUPS_PURPOSE, groups)?;
        write_atomic(&self.dir, GROUPS, &bytes)
    }

    /// Stores (or replaces) a pending message.
    pub fn put(&self, m: &Message) -> std::io::Result<()> {
        let bytes = self.encode(MESSAGE_PURPOSE, m)?;
        write_atomic(&self.dir.join(PENDING), &m.file_name(), &bytes)
    }

    pub fn remove(&self, m: &Message) -> std::io::Result<()> {
        remove_synced(&self.dir.join(PENDING), &m.file_name())
    }

    /// Moves a message to the dead letters (durably, before it leaves `pending`).
    pub fn bury(&self, m: &Message) -> std::io::Result<()> {
        let bytes = self.encode(MESSAGE_PURPOSE, m)?;
        write_atomic(&self.dir.join(DEAD), &m.file_name(), &bytes)?;
        match self.remove(m) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Forgets a dead letter once the `dead_letters` table holds it.
    pub fn forget_dead(&self, m: &Message) -> std::io::Result<()> {
        remove_synced(&self.dir.join(DEAD), &m.file_name())
    }

    fn encode(&self, purpose: &[u8], value: &impl Serialize) -> std::io::Result<Vec<u8>> {
        let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        self.sealer
            .seal(purpose, json)
            .map_err(std::io::Error::other)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        purpose: &[u8],
        bytes: Vec<u8>,
        what: &str,
    ) -> Result<T, String> {
        let json = self
            .sealer
            .open(purpose, bytes, what)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    }

    fn read_messages(&self, dir: &Path) -> std::io::Result<Vec<Message>> {
        let mut out: Vec<Message> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| self.decode(MESSAGE_PURPOSE, b, "an outbox message"))
            {
                Ok(m) => out.push(m),
                Err(e) => quarantine(&path, &e),
            }
        }
        out.sort_by(|a, b| (a.created_ns, &a.id).cmp(&(b.created_ns, &b.id)));
        Ok(out)
    }
}

fn quarantine(path: &Path, error: &dyn std::fmt::Display) {
    let aside = path.with_extension("corrupt");
    tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %error,
        "unreadable outbox file set aside");
    if let Err(e) = std::fs::rename(path, &aside) {
        tracing::error!(path = %path.display(), error = %e, "cannot set aside outbox file");
    }
}

fn remove_synced(dir: &Path, name: &str) -> std::io::Result<()> {
    std::fs::remove_file(dir.join(name))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, created_ns: i64) -> Message {
        Message {
            id: id.into(),
            group_key: "{}".into(),
            created_ns,
            service: "s".into(),
            fingerprints: vec!["f".into()],
            body: "{}".into(),
            attempts: 0,
            next_attempt_ns: 0,
            last_status: None,
            last_error: String::new(),
            dead_reason: None,
        }
    }

    #[test]
    fn messages_survive_reopen_in_order_and_corrupt_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, r) = Outbox::open(dir.path(), FileSealer::default()).unwrap();
        assert!(r.pending.is_empty() && r.dead.is_empty());
        let (a, b, c) = (
            message("msg_b", 2),
            message("msg_a", 1),
            message("msg_c", 3),
        );
        for m in [&a, &b, &c] {
            outbox.put(m).unwrap();
        }
        let mut a2 = a.clone();
        a2.attempts = 3;
        a2.last_status = Some(503);
        outbox.put(&a2).unwrap();
        outbox.remove(&c).unwrap();
        outbox.bury(&b).unwrap();
        std::fs::write(
            dir.path().join("pending/00000000000000000009-msg_x.json"),
            b"{torn",
        )
        .unwrap();
        drop(outbox);

        let (outbox, r) = Outbox::open(dir.path(), FileSealer::default()).unwrap();
        assert_eq!(r.pending, vec![a2]);
        assert_eq!(r.dead, vec![b.clone()]);
        assert!(
            dir.path()
                .join("pending/00000000000000000009-msg_x.corrupt")
                .exists()
        );
        outbox.forget_dead(&b).unwrap();
        let (_, r) = Outbox::open(dir.path(), FileSealer::default()).unwrap();
        assert!(r.dead.is_empty());
    }
}
