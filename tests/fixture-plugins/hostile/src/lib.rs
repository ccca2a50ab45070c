//! hostile (skeleton; being written).
