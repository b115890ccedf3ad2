//! `.dockerignore` files and moby/patternmatcher semantics.
