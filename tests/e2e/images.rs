//! The test images, built without a container engine: the pause image
//! pushed to the real registry reads back by digest, layer by layer.

use probity_testenv::registry::Registry;

#[test]
fn the_pause_image_is_pushed_and_served_by_digest() -> anyhow::Result<()> {
    let Some(registry) = Registry::start_or_skip() else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let image = probity_testenv::image::pause(work.path())?;
    let digest = registry.push_image("probity/pause", "3.10", &image)?;

    let accept = [("Accept", probity_testenv::image::MANIFEST_MEDIA_TYPE)];
    let (status, headers, manifest) = registry.request(
        "GET",
        &format!("/v2/probity/pause/manifests/{digest}"),
        &accept,
        b"",
    )?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&manifest));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == probity_testenv::image::MANIFEST_MEDIA_TYPE),
        "{headers:?}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let (status, _, config) = registry.request(
        "GET",
        &format!("/v2/probity/pause/blobs/{config_digest}"),
        &[],
        b"",
    )?;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_slice(&config)?;
    assert_eq!(config["config"]["Entrypoint"][0], "/pause");
    assert_eq!(config["config"]["User"], "65535:65535");
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer_digest = layers[0]["digest"].as_str().unwrap_or_default();
    assert_eq!(
        config["rootfs"]["diff_ids"][0], layer_digest,
        "uncompressed: diff ID = digest"
    );
    let (status, _, layer) = registry.request(
        "GET",
        &format!("/v2/probity/pause/blobs/{layer_digest}"),
        &[],
        b"",
    )?;
    assert_eq!(status, 200);
    assert_eq!(layer, image.layers[0].bytes());

    // The tag names the same digest; pushing again changes nothing.
    assert_eq!(
        registry.push_image("probity/pause", "3.10", &image)?,
        digest
    );
    Ok(())
}
