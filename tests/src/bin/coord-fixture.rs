//! `coord-fixture DIR`: writes a data-directory fixture with the `coord-server` built beside it
//! (see `fixture.rs`): `DIR/data` and `DIR/expected-tree.txt`. Used once per storage format:
//! `cargo run -p coord-tests --bin coord-fixture -- tests/fixtures/data-format-N`.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some(target) = std::env::args().nth(1) else {
        anyhow::bail!("usage: coord-fixture DIR");
    };
    let target = std::path::PathBuf::from(target);
    std::fs::create_dir_all(&target)?;
    coord_tests::fixture::write_fixture(&target).await;
    eprintln!("wrote {}", target.display());
    Ok(())
}
