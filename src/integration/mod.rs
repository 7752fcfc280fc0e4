//! Framework glue.

mod axum;
