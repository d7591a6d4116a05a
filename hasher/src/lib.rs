//! detwasm-hasher: UnixFS import, CIDs and CAR export exactly as IPFS computes them.
