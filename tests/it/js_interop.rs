//! Real `@automerge/automerge-repo` 2.5.x clients against our server.
