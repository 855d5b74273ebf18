// Types of index.mjs: the schema (ventas.d.ts, bound to the
// @automerge/automerge this package resolves) and the connection
// (connect.d.ts).
export * from "./ventas.js"
export * from "./connect.js"
