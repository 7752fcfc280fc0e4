//! The conformance suite on the in-memory store.

use keygate::store::{ManagedKeyStore, MemoryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms_read_only() {
    conformance::run_read_only(|records| async move {
        let store = MemoryStore::new();
        for record in records {
            store.insert(record, None).await.expect("insert");
        }
        store
    })
    .await;
}

/// The read-only suite catches a store that hides revoked records (the client would be told
/// "unknown" instead of "revoked").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "record missing")]
async fn read_only_suite_refuses_a_store_that_hides_revoked_keys() {
    use keygate::hash::KeyDigest;
    use keygate::store::{KeyRecord, KeyStore, Lookup};
    use std::sync::Arc;

    struct HidesRevoked(Vec<Arc<KeyRecord>>);

    #[keygate::async_trait]
    impl KeyStore for HidesRevoked {
        async fn find(&self, digest: &KeyDigest) -> Lookup {
            Ok(self
                .0
                .iter()
                .find(|r| r.digest == *digest && r.revoked_at.is_none())
                .cloned())
        }
    }

    conformance::run_read_only(|records| async move {
        HidesRevoked(records.into_iter().map(Arc::new).collect())
    })
    .await;
}
