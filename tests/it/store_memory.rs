//! The conformance suite on the in-memory store.

use keygate::store::{MemoryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
}
