//! Links the C++ standard library when RocksDB comes prebuilt (`ROCKSDB_LIB_DIR` and
//! `ROCKSDB_STATIC` set): librocksdb-sys then links only `librocksdb.a`, whose objects need it.
//! When librocksdb-sys compiles RocksDB itself it links the C++ library on its own.

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=ROCKSDB_STATIC");
    let prebuilt = std::env::var_os("ROCKSDB_LIB_DIR").is_some()
        && std::env::var_os("ROCKSDB_STATIC").is_some();
    if prebuilt {
        // A link argument goes after every library on the linker's command line, so the
        // archive's references to the C++ library are resolved.
        println!("cargo:rustc-link-arg=-lstdc++");
    }
}
