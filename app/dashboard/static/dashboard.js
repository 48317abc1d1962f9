// imagegate dashboard: progressive enhancement only; the page works without this script.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Times are rendered in UTC on the server; show each reader their local time on hover.
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const node of document.querySelectorAll("time[datetime]")) {
    const when = new Date(node.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      node.title = format.format(when);
    }
  }
});
