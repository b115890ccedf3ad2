//! The content store: blobs by digest under `<root>/content`, written atomically and verified.
