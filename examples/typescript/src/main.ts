// Runs the operations a frontend uses against a live rollcall server on an empty database,
// with the types generated from schema.graphql (src/gql/, `npm run generate`), and checks
// every answer. Exits non-zero on the first mismatch.
//
//   ROLLCALL_URL=http://127.0.0.1:8080/graphql npm start
import assert from "node:assert/strict";
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { ClientError, GraphQLClient, type RequestOptions, type Variables } from "graphql-request";
import {
  CreateUserDocument,
  LoginDocument,
  MeDocument,
  RefreshTokenDocument,
  RegisterDocument,
  ServerInfoDocument,
  SetRoleDocument,
  UpdateUserDocument,
  UsersDocument,
  type UserFieldsFragment,
  type UsersQuery,
} from "./gql/graphql.js";

const url = process.env.ROLLCALL_URL;
if (!url) {
  console.error("ROLLCALL_URL is not set (e.g. http://127.0.0.1:8080/graphql)");
  process.exit(2);
}

// Passes the password policy and contains none of the usernames below.
const PASSWORD = "violet teapot harbour 42";
const PAGE_SIZE = 2;

/**
 * Runs one generated operation. The variables' type comes from the document alone
 * (`NoInfer`), so a variable or input field the schema no longer has is a type error
 * (graphql-request's own `request` infers it from the variables too, and would accept it).
 */
type Run = <Result, Vars extends Variables>(
  document: TypedDocumentNode<Result, Vars>,
  ...variables: Vars extends Record<string, never> ? [] : [NoInfer<Vars>]
) => Promise<Result>;

/** A client that sends `Authorization: Bearer <token>` when given one. */
function client(accessToken?: string): Run {
  const http = new GraphQLClient(url!, {
    headers: accessToken ? { authorization: `Bearer ${accessToken}` } : {},
  });
  return <Result, Vars extends Variables>(
    document: TypedDocumentNode<Result, Vars>,
    ...variables: unknown[]
  ): Promise<Result> => {
    // The types were checked at the call; graphql-request's own overloads only need the values.
    const options: RequestOptions<Variables, Result> = { document, variables: variables[0] as Variables };
    return http.request(options);
  };
}

/** Runs `run`, which must fail with a GraphQL error carrying `extensions.code === code`. */
async function expectCode(code: string, what: string, run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    const codes = (error.response.errors ?? []).map((e) => e.extensions?.["code"]);
    assert.deepEqual(codes, [code], `${what}: expected error code ${code}, got ${JSON.stringify(codes)}`);
    return;
  }
  assert.fail(`${what}: expected error code ${code}, but it succeeded`);
}

async function main(): Promise<void> {
  const anonymous = client();

  const { serverInfo } = await anonymous(ServerInfoDocument);
  assert.equal(serverInfo.name, "rollcall");
  assert.equal(serverInfo.registrationOpen, true, "registration must be open");

  // The first account on an empty database becomes the owner.
  const { register } = await anonymous(RegisterDocument, {
    input: { username: "ada", email: "ada@example.com", password: PASSWORD, lastName: "Lovelace" },
  });
  assert.equal(register.user.role, "OWNER", "the first account must be the owner");
  assert.equal(register.tokenType, "Bearer");
  assert.ok(register.accessToken && register.refreshToken, "register returns both tokens");
  assert.ok(Date.parse(register.expiresAt) > Date.now(), "expiresAt is a future RFC 3339 time");
  const ownerId = register.user.id;

  // Log in by email.
  const { login } = await anonymous(LoginDocument, {
    input: { login: "ada@example.com", password: PASSWORD },
  });
  assert.equal(login.user.id, ownerId);
  const owner = client(login.accessToken);

  const { me } = await owner(MeDocument);
  assert.equal(me.id, ownerId);
  assert.equal(me.username, "ada");
  assert.equal(me.email, "ada@example.com");
  assert.equal(me.role, "OWNER");
  assert.ok(me.lastLoginAt !== null, "me.lastLoginAt is set after a login");

  // Without a token, `me` is refused.
  await expectCode("UNAUTHENTICATED", "me without a token", () => anonymous(MeDocument));

  // The owner creates a few accounts.
  const names = ["bob", "carol", "dave", "erin"];
  const created: UserFieldsFragment[] = [];
  for (const username of names) {
    const { createUser } = await owner(CreateUserDocument, {
      input: { username, email: `${username}@example.com`, password: PASSWORD },
    });
    assert.equal(createUser.username, username);
    assert.equal(createUser.role, "STANDARD", "createUser defaults to STANDARD");
    assert.equal(createUser.createdBy?.id, ownerId, "createdBy is the owner");
    created.push(createUser);
  }

  // Page through every user, PAGE_SIZE at a time, following endCursor.
  const seen: UsersQuery["users"]["nodes"] = [];
  let after: string | null = null;
  let pages = 0;
  for (;;) {
    const { users }: UsersQuery = await owner(UsersDocument, { first: PAGE_SIZE, after });
    pages += 1;
    assert.ok(pages <= 10, "pagination does not end");
    assert.equal(users.totalCount, 1 + names.length, "totalCount counts every user");
    assert.ok(users.nodes.length <= PAGE_SIZE, `a page holds at most ${PAGE_SIZE} users`);
    seen.push(...users.nodes);
    if (!users.pageInfo.hasNextPage) break;
    assert.ok(users.pageInfo.endCursor, "a page with a next page has an endCursor");
    after = users.pageInfo.endCursor;
  }
  assert.deepEqual(
    seen.map((u) => u.username),
    ["ada", ...names],
    "pages list every user once, in creation order",
  );
  assert.equal(pages, Math.ceil((1 + names.length) / PAGE_SIZE));
  assert.equal(seen[0]?.createdBy, null, "a self-registered account has no createdBy");
  assert.equal(seen[1]?.createdBy?.username, "ada");

  // The owner edits their own profile; fields left out keep their value.
  const { updateUser } = await owner(UpdateUserDocument, {
    id: ownerId,
    input: { firstName: "Ada" },
  });
  assert.equal(updateUser.firstName, "Ada");
  assert.equal(updateUser.lastName, "Lovelace", "a field left out is kept");

  // The owner makes bob an admin; a role filter finds exactly him.
  const bob = created[0]!;
  const { setRole } = await owner(SetRoleDocument, { id: bob.id, role: "ADMIN" });
  assert.equal(setRole.id, bob.id);
  assert.equal(setRole.role, "ADMIN");
  const admins = await owner(UsersDocument, { first: 10, filter: { role: "ADMIN" } });
  assert.deepEqual(admins.users.nodes.map((u) => u.username), ["bob"]);
  assert.equal(admins.users.totalCount, 1);

  // A standard user may not list users, nor change roles.
  const carolLogin = await anonymous(LoginDocument, {
    input: { login: "carol", password: PASSWORD },
  });
  const carol = client(carolLogin.login.accessToken);
  await expectCode("FORBIDDEN", "users as STANDARD", () => carol(UsersDocument, { first: PAGE_SIZE }));
  await expectCode("FORBIDDEN", "setRole as STANDARD", () =>
    carol(SetRoleDocument, { id: carolLogin.login.user.id, role: "ADMIN" }),
  );

  // Invalid input names the field in extensions.fields.
  try {
    await owner(CreateUserDocument, {
      input: { username: "frank", email: "frank@example.com", password: "password" },
    });
    assert.fail("a common password must be refused");
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    const [first] = error.response.errors ?? [];
    assert.equal(first?.extensions?.["code"], "BAD_USER_INPUT");
    const fields = first?.extensions?.["fields"] as Record<string, unknown> | undefined;
    assert.ok(fields?.["password"], "the error names the password field");
  }

  // Rotate the refresh token: a new pair that works, and the old refresh token is spent.
  const { refreshToken } = await anonymous(RefreshTokenDocument, {
    refreshToken: login.refreshToken,
  });
  assert.equal(refreshToken.user.id, ownerId);
  assert.notEqual(refreshToken.refreshToken, login.refreshToken, "the refresh token rotates");
  const renewed = await client(refreshToken.accessToken)(MeDocument);
  assert.equal(renewed.me.firstName, "Ada");
  // Within ROLLCALL_REFRESH_REUSE_GRACE a reuse is taken for two tabs racing each other and
  // answered; run.sh sets the grace to one second, and past it a reuse counts as theft.
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  await expectCode("UNAUTHENTICATED", "reusing a rotated refresh token after the grace", () =>
    anonymous(RefreshTokenDocument, { refreshToken: login.refreshToken }),
  );

  console.log(
    [
      `typescript client: ${serverInfo.name} ${serverInfo.version} (${serverInfo.database}) at ${url}`,
      `  register/login/me: ${me.username} is ${me.role}`,
      `  createUser: ${names.join(", ")}`,
      `  users: ${seen.length} users in ${pages} pages of ${PAGE_SIZE} (${seen.map((u) => u.username).join(", ")})`,
      `  updateUser: firstName ${updateUser.firstName}; setRole: ${setRole.username} is ${setRole.role}`,
      `  refreshToken: rotated, the old one refused`,
      `  errors: UNAUTHENTICATED, FORBIDDEN, BAD_USER_INPUT as expected`,
      `typescript client: all checks passed`,
    ].join("\n"),
  );
}

main().catch((error: unknown) => {
  console.error("typescript client: FAILED");
  if (error instanceof ClientError) {
    // A GraphQL error the run did not expect: HTTP status, then the errors as the server sent them.
    console.error(`HTTP ${error.response.status}:`, JSON.stringify(error.response.errors ?? error.response.body));
  } else {
    console.error(error);
  }
  process.exit(1);
});
