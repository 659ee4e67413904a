// Progressive enhancement only: every page works the same without this file.
(function () {
  "use strict";

  // A date picker marked data-autosubmit shows its day as soon as a whole date is chosen.
  // Typing a year digit by digit passes through years like 0202: those are not submitted.
  var DAY = /^(\d{4})-\d{2}-\d{2}$/;
  var REFOCUS = "timeline-refocus";

  // After a picker submitted its form, the new page puts the keyboard back on the picker,
  // so that arrow keys can keep walking through the days.
  try {
    var refocus = window.sessionStorage.getItem(REFOCUS);
    window.sessionStorage.removeItem(REFOCUS);
    var again = refocus && document.getElementById(refocus);
    if (again) {
      again.focus();
    }
  } catch (e) {
    // Storage may be off (private modes); the pages work without it.
  }

  document.querySelectorAll("input[data-autosubmit]").forEach(function (input) {
    var timer = null;
    input.addEventListener("change", function () {
      var match = DAY.exec(input.value);
      window.clearTimeout(timer);
      if (!match || Number(match[1]) < 1000 || !input.form) {
        return;
      }
      timer = window.setTimeout(function () {
        try {
          window.sessionStorage.setItem(REFOCUS, input.id);
        } catch (e) {
          // As above: without storage the picker simply loses focus.
        }
        if (input.form.requestSubmit) {
          input.form.requestSubmit();
        } else {
          input.form.submit();
        }
      }, 250);
    });
  });

  // Leave empty fields out of the address, so that links stay short and readable.
  document.querySelectorAll("form[method='get']").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("input[name], select[name]").forEach(function (field) {
        if (field.value === "") {
          field.disabled = true;
        }
      });
    });
  });
  // Coming back through the history shows the form as it was, fields enabled again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[method='get'] [disabled]").forEach(function (field) {
      field.disabled = false;
    });
  });
})();
