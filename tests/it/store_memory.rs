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
