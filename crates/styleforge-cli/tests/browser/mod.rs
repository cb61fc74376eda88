//! Finding Chromium for the browser tests: `$CHROME`, else `chromium`, `chromium-browser`
//! or `google-chrome` on `PATH`. Without one a test is skipped, unless
//! `STYLEFORGE_REQUIRE_BROWSER=1` (as `.ci/run` sets) makes it a failure.

use std::path::PathBuf;

/// The browser to drive, or `None` when the test should be skipped (panics when none is
/// found and `STYLEFORGE_REQUIRE_BROWSER=1`).
pub fn browser_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("CHROME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var("STYLEFORGE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "no Chromium found (chromium, chromium-browser, google-chrome or $CHROME) and \
             STYLEFORGE_REQUIRE_BROWSER=1"
        );
        eprintln!("skipped: no Chromium (set STYLEFORGE_REQUIRE_BROWSER=1 to require it)");
    }
    found
}
