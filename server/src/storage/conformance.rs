//! The storage test suite, generic over any backend.
