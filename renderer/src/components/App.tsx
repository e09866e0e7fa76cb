// Layout: model bar on top; conversations and sampling on the left; the chat; sparsity controls,
// quality against k and the inspector on the right.
import { Chat } from "./Chat.js";
import { ConversationList } from "./ConversationList.js";
import { ErrorBox } from "./ErrorBox.js";
import { EvaluationPanel } from "./EvaluationPanel.js";
import { Inspector } from "./Inspector.js";
import { ModelBar } from "./ModelBar.js";
import { SamplingPanel } from "./SamplingPanel.js";
import { SparsityPanel } from "./SparsityPanel.js";

export function App() {
  return (
    <div className="app">
      <ModelBar />
      <ErrorBox />
      <main className="workspace">
        <aside className="left">
          <ConversationList />
          <SamplingPanel />
        </aside>
        <Chat />
        <aside className="right">
          <SparsityPanel />
          <EvaluationPanel />
          <Inspector />
        </aside>
      </main>
    </div>
  );
}
