// The sign-in page. The form works without this script; it only handles the
// link the server prints on its first start, /login#token=...: the token is in
// the fragment, which the browser never sends, so it reaches no access log.
// The script takes it out of the address bar and signs in with it (a POST).

const params = new URLSearchParams(window.location.hash.slice(1));
const token = params.get("token");
if (token) {
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  const form = document.getElementById("login-form");
  form.elements.token.value = token;
  form.submit();
}
