/* A stand-in for `Worker` on pages opened from the file system (file://), written for this project.
 *
 * Browsers refuse `new Worker(url)` for a page loaded from file://, so the theme's search (which runs its index in
 * a web worker) finds nothing there. This script, loaded before the theme through mkdocs.yml's `extra.polyfills`,
 * replaces `Worker` on file:// pages only by a class that runs the worker's script in a hidden iframe of the same
 * page: messages go to the iframe as `message` events on its window, and the script's `postMessage` calls reach
 * this page as `message` events whose source is that iframe. Served over http(s) nothing changes.
 */
"use strict";
(function () {
  if (location.protocol !== "file:") {
    return;
  }

  /* The globals a worker script expects, as source text for the iframe (it runs in the iframe's window). */
  var WORKER_GLOBALS = [
    "window.postMessage = function (data) { parent.postMessage(data, '*'); };",
    "window.importScripts = function () {",
    "  var urls = Array.prototype.slice.call(arguments);",
    "  return urls.reduce(function (loaded, url) {",
    "    return loaded.then(function () {",
    "      return new Promise(function (resolve, reject) {",
    "        var script = document.createElement('script');",
    "        script.src = url; script.onload = resolve; script.onerror = reject;",
    "        document.body.appendChild(script);",
    "      });",
    "    });",
    "  }, Promise.resolve());",
    "};"
  ].join("\n");

  function FrameWorker(url) {
    var target = new EventTarget();
    var frame = document.createElement("iframe");
    frame.hidden = true;
    document.body.appendChild(frame);
    var inner = frame.contentWindow;

    inner.document.open();
    inner.document.write("<!doctype html><html><body><script>" + WORKER_GLOBALS + "<\/script>" +
                         "<script src=\"" + url + "\"><\/script></body></html>");
    inner.document.close();
    /* messages wait until the worker's script has run (the written document's load event) */
    var ready = new Promise(function (resolve, reject) {
      inner.addEventListener("load", resolve);
      inner.addEventListener("error", reject);
    });

    function relay(event) {
      if (event.source !== inner) {
        return;
      }
      var message = new MessageEvent("message", { data: event.data });
      target.dispatchEvent(message);
      if (typeof target.onmessage === "function") {
        target.onmessage(message);
      }
    }
    window.addEventListener("message", relay);

    target.postMessage = function (data) {
      ready.then(function () {
        inner.dispatchEvent(new MessageEvent("message", { data: structuredClone(data) }));
      });
    };
    target.terminate = function () {
      window.removeEventListener("message", relay);
      frame.remove();
    };
    return target;
  }

  window.Worker = FrameWorker;
})();
