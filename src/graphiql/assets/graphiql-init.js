// Renders GraphiQL against this server. A file of its own, not an inline script, so the
// page's Content-Security-Policy can forbid inline scripts.
'use strict';

(function () {
  var defaultQuery = [
    '# rollcall: a user-management GraphQL API.',
    '#',
    '# Anyone may ask for serverInfo. To act as a user, run the login mutation,',
    '# then put its accessToken in the Headers tab below:',
    '#',
    '#   {"Authorization": "Bearer <accessToken>"}',
    '#',
    '# and ask, for instance, { me { username role } }.',
    '',
    '{ serverInfo { name version } }',
    '',
  ].join('\n');

  // The endpoint is this page's own URL: GET serves GraphiQL, POST runs operations.
  var url = new URL('graphql', document.baseURI).toString();

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: url }),
      defaultQuery: defaultQuery,
      isHeadersEditorEnabled: true,
      // Open on the Headers tab, where the Authorization header goes.
      defaultEditorToolsVisibility: 'headers',
      // What GraphiQL remembers (editors, tabs, history) holds tokens and typed passwords:
      // it is kept in this tab's session storage, gone with the tab, never in localStorage.
      storage: window.sessionStorage,
      shouldPersistHeaders: false,
    }),
  );
})();
