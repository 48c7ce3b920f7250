//! Who this handset is: the identity and server keys pinned at enrollment,
//! and the server it enrolled with.

use super::Store;
use crate::envelope::VerifyingKey;
use crate::error::Error;
use rusqlite::params;

/// Who this handset is, set at enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub device_id: String,
    pub courier_id: String,
    pub server_keys: Vec<VerifyingKey>,
}

impl Store {
    /// The enrolled identity, if any.
    pub fn identity(&self) -> Result<Option<Identity>, Error> {
        let (Some(device_id), Some(courier_id)) =
            (self.meta("device_id")?, self.meta("courier_id")?)
        else {
            return Ok(None);
        };
        Ok(Some(Identity {
            device_id,
            courier_id,
            server_keys: self.server_keys()?,
        }))
    }

    pub fn server_keys(&self) -> Result<Vec<VerifyingKey>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT kid, public_key FROM server_keys ORDER BY kid")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let (kid, pk) = row?;
            let public: [u8; 32] = pk
                .try_into()
                .map_err(|_| Error::Corrupt("a pinned server key is not 32 bytes".into()))?;
            keys.push(VerifyingKey { kid, public });
        }
        Ok(keys)
    }

    /// Records who this handset is. Replaces any earlier identity and its keys.
    pub fn set_identity(&mut self, id: &Identity) -> Result<(), Error> {
        self.in_write_tx(|tx| {
            Self::set_meta(tx, "device_id", &id.device_id)?;
            Self::set_meta(tx, "courier_id", &id.courier_id)?;
            tx.execute("DELETE FROM server_keys", [])?;
            for k in &id.server_keys {
                tx.execute(
                    "INSERT INTO server_keys (kid, public_key) VALUES (?1, ?2)",
                    params![k.kid, k.public.to_vec()],
                )?;
            }
            Ok(())
        })
    }

    /// Adds server keys learned later (rotation); existing pins stay.
    pub fn add_server_keys(&mut self, keys: &[VerifyingKey]) -> Result<(), Error> {
        self.in_write_tx(|tx| {
            for k in keys {
                tx.execute(
                    "INSERT OR IGNORE INTO server_keys (kid, public_key) VALUES (?1, ?2)",
                    params![k.kid, k.public.to_vec()],
                )?;
            }
            Ok(())
        })
    }

    /// The server this handset enrolled with.
    pub fn server_url(&self) -> Result<Option<String>, Error> {
        self.meta("server_url")
    }

    pub fn set_server_url(&mut self, url: &str) -> Result<(), Error> {
        Self::set_meta(&self.conn, "server_url", url)
    }
}
