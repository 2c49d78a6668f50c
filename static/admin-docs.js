// Renders the admin API's interactive docs (served at /admin/docs) from the generated OpenAPI
// document. Kept out of the HTML so the page needs no inline script under a strict CSP.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/admin/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // Keeps the bearer token entered under "Authorize" across reloads (in this browser's storage).
  persistAuthorization: true,
  // The default validator badge loads an image from a public service; nothing leaves the machine.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
