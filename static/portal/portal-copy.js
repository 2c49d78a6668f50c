// Copy buttons: a button with data-copy="<input id>" copies that input's value.
// Without JavaScript the buttons stay hidden and the key is selectable text.
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) {
      return;
    }
    var status = button.parentElement.querySelector(".copy-status");
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function (text) {
        if (status) {
          status.textContent = text;
        }
      };
      field.select();
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(field.value).then(
          function () { done("Copied to the clipboard."); },
          function () { done("Press Ctrl+C (or ⌘C) to copy the selected key."); }
        );
      } else {
        done("Press Ctrl+C (or ⌘C) to copy the selected key.");
      }
    });
  });
  document.querySelectorAll("input.key-value").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
})();
