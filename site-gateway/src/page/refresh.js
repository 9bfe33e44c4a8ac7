// Re-fetches the page every 2 s and swaps in its freshly rendered #live part, so the
// server stays the only renderer. If the gateway stops answering, the last picture stays,
// dimmed, and the footer says since when.
(function () {
  var conn = document.getElementById("conn");
  var lostSince = null;
  function refresh() {
    fetch(location.pathname, { cache: "no-store" })
      .then(function (response) {
        // Signed out elsewhere, or the token was removed or expired: show the sign-in.
        if (response.status === 401) { location.reload(); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (next && live) { live.replaceWith(next); }
        lostSince = null;
        document.body.classList.remove("stale");
        conn.classList.remove("stale");
        conn.textContent = "live · updated " + new Date().toLocaleTimeString() + " · refreshes every 2 s";
      })
      .catch(function (error) {
        lostSince = lostSince || new Date();
        document.body.classList.add("stale");
        conn.classList.add("stale");
        conn.textContent = "gateway not answering since " + lostSince.toLocaleTimeString() +
          " (" + error.message + "); showing the last picture";
      });
  }
  setInterval(refresh, 2000);
})();
