//! Images: references, the registry client, the content store, layer unpack, snapshots and the
//! image config -> OCI spec conversion. (Being built: see issue 3.)
