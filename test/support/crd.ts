/** The VirtualCluster CRD as the API server gets it (config/crd), read for tests. */
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';

/** The part of an OpenAPI v3 schema the tests walk. */
export interface SchemaNode {
  default?: unknown;
  properties?: Record<string, SchemaNode>;
  additionalProperties?: SchemaNode | boolean;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  oneOf?: SchemaNode[];
  allOf?: SchemaNode[];
}

/** The CRD's schema of spec. */
export async function crdSpecSchema(): Promise<SchemaNode> {
  const crd = parse(
    await readFile(new URL('../../config/crd/virtualclusters.kosmos.io.yaml', import.meta.url), 'utf8'),
  ) as { spec: { versions: { schema: { openAPIV3Schema: { properties: { spec: SchemaNode } } } }[] } };
  return crd.spec.versions[0]!.schema.openAPIV3Schema.properties.spec;
}

/** Every default the schema declares, by path (`a.b`, `a[]` for items, `a{}` for map values). */
export function schemaDefaults(schema: SchemaNode, path = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (schema.default !== undefined) out[path] = schema.default;
  const under = (node: SchemaNode, at: string) => Object.assign(out, schemaDefaults(node, at));
  for (const [k, v] of Object.entries(schema.properties ?? {})) under(v, path ? `${path}.${k}` : k);
  if (schema.items) under(schema.items, `${path}[]`);
  if (typeof schema.additionalProperties === 'object') under(schema.additionalProperties, `${path}{}`);
  for (const alt of [...(schema.anyOf ?? []), ...(schema.oneOf ?? []), ...(schema.allOf ?? [])])
    under(alt, path);
  return out;
}
