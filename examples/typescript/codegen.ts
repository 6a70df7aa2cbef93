// Generates TypedDocumentNode objects and their result and variable types (src/gql/) from
// the server's committed schema and the operations in src/operations/. The output is not
// committed: CI regenerates it, so a schema change that breaks an operation fails there.
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["src/operations/*.graphql"],
  ignoreNoDocuments: false,
  emitLegacyCommonJSImports: false,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: {
        // Fragments are plain shared selections here, not masked per component.
        fragmentMasking: false,
      },
      config: {
        // Every custom scalar must be mapped; DateTime arrives as an RFC 3339 string.
        strictScalars: true,
        scalars: { DateTime: "string" },
        enumsAsTypes: true,
        useTypeImports: true,
        // A nullable field selected is always present in the result: `T | null`, never missing.
        avoidOptionals: { field: true },
        skipTypename: true,
      },
    },
  },
};

export default config;
