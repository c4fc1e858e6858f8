// How the tests and benchmarks start Debian's Chromium: headless, no sandbox (root in CI),
// nothing fetched from outside (this machine's network is closed).
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'];
