// VS Code client for the netdsl language server: starts `netdsl lsp` (configurable with
// netdsl.server.command / netdsl.server.args) for .net files. Highlighting and brackets work
// without this file's dependency; the language features need `npm install` in this folder.
"use strict";

const vscode = require("vscode");

let client;

function serverOptions(config) {
  return {
    command: config.get("server.command", "netdsl"),
    args: config.get("server.args", ["lsp"]),
  };
}

function activate(context) {
  let languageclient;
  try {
    languageclient = require("vscode-languageclient/node");
  } catch (error) {
    vscode.window.showWarningMessage(
      "netdsl: run `npm install` in the extension's folder to enable the language server " +
        "(highlighting works without it).");
    return;
  }
  client = new languageclient.LanguageClient(
    "netdsl",
    "netdsl language server",
    serverOptions(vscode.workspace.getConfiguration("netdsl")),
    {
      documentSelector: [
        { scheme: "file", language: "netdsl" },
        { scheme: "untitled", language: "netdsl" },
      ],
    });
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
