/**
 * The pulumi engine's inline program: the plan's resources as `@pulumi/command` `local.Command`
 * resources (create, delete, stdin through the environment, dependsOn), and the outputs a person
 * needs to reach the VM. It only declares: no waits, no SSH, no process.env.
 * (`@pulumi/libvirt` is deprecated and not obtainable; see docs/decisions/0001.)
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { Plan } from "../plan.ts";
import { createScript, deleteScript } from "../shell.ts";

/** What the program declares for one plan resource (compared with the plan in tests). */
export interface DeclaredResource {
  name: string;
  create: string;
  delete: string;
  dependsOn: string[];
  /** Environment variable names, and which of them are secret. */
  environment: Record<string, { secret: boolean }>;
}

/** Declares the stack of a plan; returns the resources and what was declared for each. */
export function declareStack(plan: Plan): { resources: Map<string, command.local.Command>; declared: DeclaredResource[] } {
  const resources = new Map<string, command.local.Command>();
  const declared: DeclaredResource[] = [];
  for (const resource of plan.resources) {
    const create = createScript(resource.create);
    const remove = deleteScript(resource.delete);
    const variables = { ...create.environment, ...remove.environment };
    const environment: Record<string, pulumi.Input<string>> = {};
    for (const [name, { value, secret }] of Object.entries(variables)) environment[name] = secret ? pulumi.secret(value) : value;
    const dependsOn = resource.dependsOn.map((name) => {
      const dependency = resources.get(name);
      if (!dependency) throw new Error(`plan resource ${resource.name} depends on ${name}, which comes later or not at all`);
      return dependency;
    });
    resources.set(
      resource.name,
      new command.local.Command(resource.name, { create: create.script, delete: remove.script, environment, interpreter: ["/bin/sh", "-c"] }, { dependsOn }),
    );
    declared.push({
      name: resource.name,
      create: create.script,
      delete: remove.script,
      dependsOn: resource.dependsOn,
      environment: Object.fromEntries(Object.entries(variables).map(([name, { secret }]) => [name, { secret }])),
    });
  }
  return { resources, declared };
}

/** The inline program for the Automation API: declares the plan and exports its outputs. */
export function stackProgram(plan: Plan): () => Promise<Record<string, unknown>> {
  return async () => {
    declareStack(plan);
    return { ...plan.outputs };
  };
}
