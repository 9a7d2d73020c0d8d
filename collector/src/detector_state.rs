//! The detector's state across restarts: `<data_dir>/detector/state`, the JSON of
//! [`SavedState`], rewritten every minute and at shutdown and read at start. With encryption at
//! rest it is sealed with the active storage key like every other file Vigil persists.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vigil_detector::detect::SavedState;

use crate::durable::write_atomic;
use crate::storage::crypto::FileSealer;

const PURPOSE: &[u8] = b"vigil detector state";
const NAME: &str = "state";

pub struct StateFile {
    dir: PathBuf,
    sealer: FileSealer,
}

impl StateFile {
    pub fn new(data_dir: &Path, sealer: FileSealer) -> Self {
        Self {
            dir: data_dir.join("detector"),
            sealer,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(NAME)
    }

    /// The saved state; `None` when there is none yet.
    pub fn load(&self) -> anyhow::Result<Option<SavedState>> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let json = self.sealer.open(PURPOSE, bytes, "the detector state")?;
        let state = serde_json::from_slice(&json).context("saved detector state is not valid")?;
        Ok(Some(state))
    }

    pub fn save(&self, state: &SavedState) -> anyhow::Result<()> {
        let json = serde_json::to_vec(state).context("cannot encode the detector state")?;
        let bytes = self.sealer.seal(PURPOSE, json)?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        write_atomic(&self.dir, NAME, &bytes)
            .with_context(|| format!("cannot write {}", self.path().display()))
    }

    /// Moves an unusable state file out of the way (`state.unreadable-<ns>`), so the next save
    /// does not overwrite what may still be read with the right key or build.
    pub fn set_aside(&self) {
        let aside = self
            .dir
            .join(format!("{NAME}.unreadable-{}", vigil_core::time::now_ns()));
        if let Err(e) = std::fs::rename(self.path(), &aside) {
            tracing::error!(error = %e, "cannot set the detector state file aside");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vigil_detector::detect::SAVED_STATE_VERSION;
    use vigil_detector::{Detector, DetectorConfig, RuleSet};

    use super::*;
    use crate::storage::crypto::{EncryptionConfig, Keyring, generate_entry};

    fn keyring(dir: &Path, entries: &[String]) -> Keyring {
        let path = dir.join("storage.keys");
        std::fs::write(&path, entries.join("\n")).unwrap();
        Keyring::load(&EncryptionConfig {
            keys_env: None,
            keys_file: Some(path),
        })
        .unwrap()
        .unwrap()
    }

    fn state() -> SavedState {
        let detector = Detector::new(
            &DetectorConfig::default(),
            Arc::new(RuleSet::load(&[]).unwrap()),
        )
        .unwrap();
        detector.save(42)
    }

    #[test]
    fn plain_and_sealed_states_read_back_and_a_wrong_keyring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plain = StateFile::new(dir.path(), FileSealer::default());
        assert!(plain.load().unwrap().is_none(), "no file yet");
        plain.save(&state()).unwrap();
        let back = plain.load().unwrap().unwrap();
        assert_eq!((back.version, back.saved_ns), (SAVED_STATE_VERSION, 42));

        let key = generate_entry("k1").unwrap();
        let sealed = StateFile::new(
            dir.path(),
            FileSealer::new(Some(keyring(dir.path(), std::slice::from_ref(&key)))),
        );
        sealed.save(&state()).unwrap();
        let bytes = std::fs::read(sealed.path()).unwrap();
        assert!(
            !bytes.windows(9).any(|w| w == b"\"version\""),
            "sealed state holds plain JSON"
        );
        assert_eq!(sealed.load().unwrap().unwrap().saved_ns, 42);

        // Without the keyring, or with a keyring lacking the key, the state is not read.
        let no_keys = StateFile::new(dir.path(), FileSealer::default());
        assert!(format!("{:#}", no_keys.load().unwrap_err()).contains("no storage keyring"));
        let other = generate_entry("k2").unwrap();
        let rotated_out = StateFile::new(
            dir.path(),
            FileSealer::new(Some(keyring(dir.path(), &[other]))),
        );
        assert!(format!("{:#}", rotated_out.load().unwrap_err()).contains("`k1`"));

        // A flipped byte fails authentication.
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        std::fs::write(sealed.path(), &tampered).unwrap();
        assert!(sealed.load().is_err());
        sealed.set_aside();
        assert!(
            sealed.load().unwrap().is_none(),
            "set aside, not in the way"
        );
        std::fs::write(sealed.path(), b"VGSEALED").unwrap();
        assert!(sealed.load().is_err(), "a truncated header");
    }
}
