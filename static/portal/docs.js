// Renders a version's interactive reference (/apis/{slug}/{version}/docs) with the vendored
// Swagger UI. The document URL comes from the page (data-url); kept out of the HTML so the page
// needs no inline script under its strict Content-Security-Policy.
"use strict";

(function () {
  var host = document.getElementById("swagger-ui");
  if (!host || typeof SwaggerUIBundle === "undefined") {
    return;
  }
  window.ui = SwaggerUIBundle({
    url: host.dataset.url,
    domNode: host,
    deepLinking: true,
    // The default validator badge loads an image from a public service; nothing leaves the machine.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
