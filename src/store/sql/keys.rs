//! The keys table, `keygate_keys`: the request path's lookup and the key lifecycle.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Transaction;
use time::OffsetDateTime;

use super::SqlStore;
use super::changes::Notice;
use super::codec::{Arg, KeyRow, nanos, write_error};
use super::dialect::Dialect;
use super::driver::{Driver, On};
use crate::hash::KeyDigest;
use crate::store::{
    KeyRecord, KeyStore, Lookup, ManagedKeyStore, StoreError, check_record_times, judged_at,
};

// `$n` placeholders mean the same in every statement that has them (but the undo of a rotation):
// $1 the tenant, $2 the key id, $3 the time a key must be active at, $4 the value set.

const FIND: &str = "SELECT id, tenant_id, name, digest, prefix, last4, scopes, environment, \
     created_at, expires_at, revoked_at, last_used_at, metadata, restrictions \
     FROM keygate_keys WHERE digest = $1";

const GET: &str = "SELECT id, tenant_id, name, digest, prefix, last4, scopes, environment, \
     created_at, expires_at, revoked_at, last_used_at, metadata, restrictions \
     FROM keygate_keys WHERE tenant_id = $1 AND id = $2 \
     AND (revoked_at IS NULL OR revoked_at > $3) AND (expires_at IS NULL OR expires_at > $3)";

/// Only the id: enough to tell a key in its grace period from a missing one.
const GET_ID: &str = "SELECT id FROM keygate_keys WHERE tenant_id = $1 AND id = $2 \
     AND (revoked_at IS NULL OR revoked_at > $3) AND (expires_at IS NULL OR expires_at > $3)";

/// $2 the time the keys must be active at.
const LIST: &str = "SELECT id, tenant_id, name, digest, prefix, last4, scopes, environment, \
     created_at, expires_at, revoked_at, last_used_at, metadata, restrictions \
     FROM keygate_keys WHERE tenant_id = $1 \
     AND (revoked_at IS NULL OR revoked_at > $2) AND (expires_at IS NULL OR expires_at > $2) \
     ORDER BY created_at, id";

/// $2 the time the keys must be active at.
const COUNT_ACTIVE: &str = "SELECT COUNT(*) FROM keygate_keys WHERE tenant_id = $1 \
     AND (revoked_at IS NULL OR revoked_at > $2) AND (expires_at IS NULL OR expires_at > $2)";

const COUNT_ALL: &str = "SELECT COUNT(*) FROM keygate_keys";

const INSERT: &str = "INSERT INTO keygate_keys (id, tenant_id, name, digest, prefix, last4, \
     scopes, environment, created_at, expires_at, revoked_at, last_used_at, metadata, \
     restrictions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const RENAME: &str = "UPDATE keygate_keys SET name = $4 WHERE tenant_id = $1 AND id = $2 \
     AND (revoked_at IS NULL OR revoked_at > $3) AND (expires_at IS NULL OR expires_at > $3) \
     RETURNING id, tenant_id, name, digest, prefix, last4, scopes, environment, created_at, \
     expires_at, revoked_at, last_used_at, metadata, restrictions";

const REVOKE: &str = "UPDATE keygate_keys SET revoked_at = $4 WHERE tenant_id = $1 AND id = $2 \
     AND (revoked_at IS NULL OR revoked_at > $3) AND (expires_at IS NULL OR expires_at > $3) \
     RETURNING id, tenant_id, name, digest, prefix, last4, scopes, environment, created_at, \
     expires_at, revoked_at, last_used_at, metadata, restrictions";

/// Only a key with no revocation time at all: a key in its grace period has already been
/// replaced.
const ROTATE: &str = "UPDATE keygate_keys SET revoked_at = $4 WHERE tenant_id = $1 AND id = $2 \
     AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3) \
     RETURNING id, tenant_id, name, digest, prefix, last4, scopes, environment, created_at, \
     expires_at, revoked_at, last_used_at, metadata, restrictions";

// The undo of a rotation has a `$3` of its own: the successor's revocation time in
// `UNDO_REVOKE`, the time the rotation ended the old key at in `UNDO_RESTORE`.

/// The successor, if it was never revoked or replaced.
const UNDO_REVOKE: &str = "UPDATE keygate_keys SET revoked_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL \
     RETURNING id, tenant_id, name, digest, prefix, last4, scopes, environment, created_at, \
     expires_at, revoked_at, last_used_at, metadata, restrictions";

/// The old key, if it still ends when its rotation said.
const UNDO_RESTORE: &str = "UPDATE keygate_keys SET revoked_at = NULL \
     WHERE tenant_id = $1 AND id = $2 AND revoked_at = $3 \
     RETURNING id, tenant_id, name, digest, prefix, last4, scopes, environment, created_at, \
     expires_at, revoked_at, last_used_at, metadata, restrictions";

/// $1 the key id, $2 the time it was used; a time never moves back.
const TOUCH: &str = "UPDATE keygate_keys SET last_used_at = $2 \
     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";

// `Driver` is the store's own plumbing, implemented for every database a `Dialect` names: the
// bound is always met, and there is nothing in it for a caller to see.
#[allow(private_bounds)]
impl<D: Dialect> SqlStore<D>
where
    D::Db: Driver,
{
    /// The number of key records, revoked and expired ones included.
    pub async fn count_keys(&self) -> Result<u64, StoreError> {
        self.dialect.check_read()?;
        let n = D::Db::fetch_int(On::Pool(&self.pool), COUNT_ALL, vec![])
            .await
            .map_err(StoreError::backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Refuses with `ActiveKeyLimit(max)` when the tenant has `max` keys active at `at`.
    async fn check_cap(
        tx: &mut Transaction<'static, D::Db>,
        tenant_id: &str,
        at: i64,
        max: usize,
    ) -> Result<(), StoreError> {
        let args = vec![Arg::Text(tenant_id.to_owned()), Arg::Int(at)];
        let n = D::Db::fetch_int(On::Tx(tx), COUNT_ACTIVE, args)
            .await
            .map_err(StoreError::backend)?;
        if n >= i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(StoreError::ActiveKeyLimit(max));
        }
        Ok(())
    }

    async fn insert_in(
        tx: &mut Transaction<'static, D::Db>,
        record: &KeyRecord,
    ) -> Result<(), StoreError> {
        D::Db::execute(On::Tx(tx), INSERT, KeyRow::args(record)?)
            .await
            .map_err(write_error)
    }

    /// Runs `sql` (an update returning the key, with `value` as `$4`) on one key active at the
    /// judged time, in a serialised transaction.
    async fn update_one(
        &self,
        sql: &'static str,
        tenant_id: &str,
        key_id: &str,
        value: Arg,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        nanos(now)?;
        self.dialect.check_write()?;
        let mut tx = self.dialect.begin_write(&self.pool, tenant_id).await?;
        let at = nanos(judged_at(now))?;
        let args = vec![
            Arg::Text(tenant_id.to_owned()),
            Arg::Text(key_id.to_owned()),
            Arg::Int(at),
            value,
        ];
        let row = D::Db::fetch_key(On::Tx(&mut tx), sql, args)
            .await
            .map_err(write_error)?;
        let record = row.map(KeyRow::into_record).transpose()?;
        if let Some(r) = &record {
            self.publish(&mut tx, Notice::Key(r.digest)).await?;
            self.commit(tx).await?;
        }
        Ok(record)
    }
}

#[async_trait]
impl<D: Dialect> KeyStore for SqlStore<D>
where
    D::Db: Driver,
{
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        self.dialect.check_read()?;
        let args = vec![Arg::Bytes(digest.as_bytes().to_vec())];
        let row = D::Db::fetch_key(On::Pool(&self.pool), FIND, args)
            .await
            .map_err(StoreError::backend)?;
        let record = row.map(KeyRow::into_record).transpose()?;
        // Equality of the index is not enough: compare the whole digest in constant time.
        Ok(record.filter(|r| r.digest == *digest).map(Arc::new))
    }
}

#[async_trait]
impl<D: Dialect> ManagedKeyStore for SqlStore<D>
where
    D::Db: Driver,
{
    async fn insert(&self, record: KeyRecord, max_active: Option<usize>) -> Result<(), StoreError> {
        check_record_times(&record)?;
        self.dialect.check_write()?;
        let mut tx = self
            .dialect
            .begin_write(&self.pool, &record.tenant_id)
            .await?;
        if let Some(max) = max_active {
            let at = nanos(record.created_at)?;
            Self::check_cap(&mut tx, &record.tenant_id, at, max).await?;
        }
        Self::insert_in(&mut tx, &record).await?;
        // Instances that remember the digest as unknown forget it.
        self.publish(&mut tx, Notice::Key(record.digest)).await?;
        Ok(self.commit(tx).await?)
    }

    async fn get(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let now = nanos(now)?;
        self.dialect.check_read()?;
        let args = vec![
            Arg::Text(tenant_id.to_owned()),
            Arg::Text(key_id.to_owned()),
            Arg::Int(now),
        ];
        let row = D::Db::fetch_key(On::Pool(&self.pool), GET, args)
            .await
            .map_err(StoreError::backend)?;
        row.map(KeyRow::into_record).transpose()
    }

    async fn list(
        &self,
        tenant_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let now = nanos(now)?;
        self.dialect.check_read()?;
        let args = vec![Arg::Text(tenant_id.to_owned()), Arg::Int(now)];
        let rows = D::Db::fetch_keys(On::Pool(&self.pool), LIST, args)
            .await
            .map_err(StoreError::backend)?;
        rows.into_iter().map(KeyRow::into_record).collect()
    }

    async fn rename(
        &self,
        tenant_id: &str,
        key_id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.update_one(RENAME, tenant_id, key_id, Arg::Text(name.to_owned()), now)
            .await
    }

    async fn revoke(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let at = nanos(now)?;
        self.update_one(REVOKE, tenant_id, key_id, Arg::Int(at), now)
            .await
    }

    async fn rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max_active: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_record_times(&replacement)?;
        let until = nanos(old_until)?;
        nanos(now)?;
        self.dialect.check_write()?;
        let mut tx = self.dialect.begin_write(&self.pool, tenant_id).await?;
        // Judged inside the serialised transaction: a revocation or rotation that committed
        // first is seen, whatever the caller's clock said.
        let at = judged_at(now);
        let at_nanos = nanos(at)?;
        let key = || {
            vec![
                Arg::Text(tenant_id.to_owned()),
                Arg::Text(key_id.to_owned()),
                Arg::Int(at_nanos),
            ]
        };
        let mut args = key();
        args.push(Arg::Int(until));
        let row = D::Db::fetch_key(On::Tx(&mut tx), ROTATE, args)
            .await
            .map_err(StoreError::backend)?;
        let Some(row) = row else {
            // Nothing changed: tell a key in its grace period from a missing one.
            let in_grace = D::Db::fetch_text(On::Tx(&mut tx), GET_ID, key())
                .await
                .map_err(StoreError::backend)?;
            return match in_grace {
                Some(_) => Err(StoreError::AlreadyRotated),
                None => Ok(None),
            };
        };
        let old = row.into_record()?;
        // With grace the old key stays active beside its successor (it is counted, being
        // active until `until`); without, the count does not grow.
        if let Some(max) = max_active.filter(|_| old_until > at) {
            Self::check_cap(&mut tx, tenant_id, at_nanos, max).await?;
        }
        Self::insert_in(&mut tx, &replacement).await?;
        self.publish(&mut tx, Notice::Key(old.digest)).await?;
        self.publish(&mut tx, Notice::Key(replacement.digest))
            .await?;
        self.commit(tx).await?;
        Ok(Some(old))
    }

    async fn undo_rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        old_until: OffsetDateTime,
        successor_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, KeyRecord)>, StoreError> {
        let until = nanos(old_until)?;
        nanos(now)?;
        self.dialect.check_write()?;
        let mut tx = self.dialect.begin_write(&self.pool, tenant_id).await?;
        let at = nanos(judged_at(now))?;
        let args = |id: &str, time: i64| {
            vec![
                Arg::Text(tenant_id.to_owned()),
                Arg::Text(id.to_owned()),
                Arg::Int(time),
            ]
        };
        // Either update finding nothing drops the transaction, which rolls the other back.
        let Some(successor) =
            D::Db::fetch_key(On::Tx(&mut tx), UNDO_REVOKE, args(successor_id, at))
                .await
                .map_err(write_error)?
        else {
            return Ok(None);
        };
        let Some(old) = D::Db::fetch_key(On::Tx(&mut tx), UNDO_RESTORE, args(key_id, until))
            .await
            .map_err(write_error)?
        else {
            return Ok(None);
        };
        let (old, successor) = (old.into_record()?, successor.into_record()?);
        self.publish(&mut tx, Notice::Key(old.digest)).await?;
        self.publish(&mut tx, Notice::Key(successor.digest)).await?;
        self.commit(tx).await?;
        Ok(Some((old, successor)))
    }

    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        // The whole batch or nothing.
        let used = used
            .iter()
            .map(|(id, at)| Ok((id, nanos(*at)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.dialect.check_write()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        for (id, at) in used {
            let args = vec![Arg::Text(id.clone()), Arg::Int(at)];
            D::Db::execute(On::Tx(&mut tx), TOUCH, args)
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(self.commit(tx).await?)
    }
}
